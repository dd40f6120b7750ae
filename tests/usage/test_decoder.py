"""Content-Encoding undone incrementally: gzip, deflate, br, and refusals."""

from __future__ import annotations

import gzip
import zlib

import pytest

from lms_metrics_proxy.errors import UsageError
from lms_metrics_proxy.usage import decoder
from lms_metrics_proxy.usage.decoder import make_decoder

TEXT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n' * 50


def decode_all(name: str, pieces: list[bytes]) -> bytes:
    engine = make_decoder(name)
    assert engine is not None
    out = [b"".join(engine.decode(piece)) for piece in pieces]
    tail: bytes = engine.flush()
    return b"".join(out) + tail


@pytest.mark.parametrize("name", [None, "", "identity", " Identity "])
def test_identity_needs_no_decoder(name: str | None) -> None:
    assert make_decoder(name) is None


@pytest.mark.parametrize("name", ["gzip", "x-gzip", "GZIP"])
def test_gzip_is_undone_byte_by_byte(name: str) -> None:
    packed = gzip.compress(TEXT, mtime=0)

    assert decode_all(name, [packed[i : i + 1] for i in range(len(packed))]) == TEXT


def test_sync_flushed_gzip_gives_each_segment_when_it_arrives() -> None:
    packer = zlib.compressobj(wbits=31)
    engine = make_decoder("gzip")
    assert engine is not None

    outputs = [
        b"".join(engine.decode(packer.compress(part) + packer.flush(zlib.Z_SYNC_FLUSH)))
        for part in (b"data: 1\n\n", b"data: 2\n\n")
    ]

    assert outputs == [b"data: 1\n\n", b"data: 2\n\n"]


def test_concatenated_gzip_members_are_one_body() -> None:
    packed = gzip.compress(b"first ", mtime=0) + gzip.compress(b"second", mtime=0)

    assert decode_all("gzip", [packed]) == b"first second"


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_is_read_zlib_wrapped_or_raw(wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(TEXT) + packer.flush()

    assert decode_all("deflate", [packed[:3], packed[3:]]) == TEXT


def test_huge_inflation_comes_in_bounded_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decoder, "PIECE", 1000)
    packed = gzip.compress(b"\0" * 100_000, mtime=0)
    engine = make_decoder("gzip")
    assert engine is not None

    pieces = list(engine.decode(packed))

    assert max(len(piece) for piece in pieces) == 1000
    assert sum(len(piece) for piece in pieces) == 100_000


def test_corrupt_gzip_raises_zlib_error() -> None:
    engine = make_decoder("gzip")
    assert engine is not None

    with pytest.raises(zlib.error):
        list(engine.decode(b"\x1f\x8b\x08\x00" + b"\xff" * 40))


@pytest.mark.parametrize("name", ["zstd", "compress", "gzip, br"])
def test_unknown_encodings_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="cannot be decoded"):
        make_decoder(name)


def test_br_without_the_brotli_module_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "brotli", None)

    with pytest.raises(UsageError, match="brotli"):
        make_decoder("br")


def test_br_with_a_brotli_module_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    class Decompressor:
        def process(self, data: bytes) -> bytes:
            return data.upper()

    class Brotli:
        pass

    Brotli.Decompressor = Decompressor  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "brotli", Brotli)

    assert decode_all("br", [b"ab", b"c"]) == b"ABC"


def test_br_that_yields_nothing_yet_gives_no_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Decompressor:
        def process(self, data: bytes) -> bytes:
            return b""

    class Brotli:
        pass

    Brotli.Decompressor = Decompressor  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "brotli", Brotli)
    engine = make_decoder("br")
    assert engine is not None

    assert list(engine.decode(b"partial")) == []
