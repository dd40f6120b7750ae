"""Content-Encoding undone for reading: gzip, deflate, and br when available.

The client always gets the compressed bytes; the meter reads a decompressed
copy, chunk by chunk (a sync-flushed gzip stream yields each event as it
comes). Output comes in pieces of at most `PIECE` bytes, so a small chunk
that inflates hugely never needs one huge buffer.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

from lms_metrics_proxy.errors import UsageError

PIECE = 1 << 20
# wbits: 16 + MAX_WBITS reads a gzip header, 32 + MAX_WBITS detects gzip or zlib.
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS


class Decoder(Protocol):
    """Undoes one Content-Encoding incrementally."""

    def decode(self, data: bytes) -> Iterator[bytes]: ...

    def flush(self) -> bytes: ...


class ZlibDecoder:
    """gzip or deflate (zlib-wrapped or, as some servers send it, raw)."""

    __slots__ = ("_engine", "_started", "_wbits")

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._engine = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the decompressed pieces of `data`; raises zlib.error on bad input."""
        if not self._started and data:
            self._started = True
            data = self._first(data)
        while data:
            piece = self._engine.decompress(data, PIECE)
            if piece:
                yield piece
            data = self._rest()

    def _first(self, data: bytes) -> bytes:
        # "deflate" should be zlib-wrapped, but some servers send raw deflate.
        if self._wbits == _GZIP_OR_ZLIB and data[:1] not in (b"\x1f", b"\x78"):
            self._wbits = _RAW_DEFLATE
            self._engine = zlib.decompressobj(_RAW_DEFLATE)
        return data

    def _rest(self) -> bytes:
        if not self._engine.eof:
            return self._engine.unconsumed_tail
        # Several gzip members in a row form one body (RFC 1952 §2.2).
        more = self._engine.unused_data
        if more and self._wbits != _RAW_DEFLATE:
            self._engine = zlib.decompressobj(self._wbits)
        return more if self._wbits != _RAW_DEFLATE else b""

    def flush(self) -> bytes:
        """Return what the decompressor still holds at the end of the body."""
        return self._engine.flush()


class BrotliDecoder:
    """br, through the optional `brotli` module."""

    __slots__ = ("_engine",)

    def __init__(self, module: Any) -> None:
        self._engine = module.Decompressor()

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the decompressed bytes of `data`."""
        piece = self._engine.process(data)
        if piece:
            yield piece

    def flush(self) -> bytes:
        """Return nothing: brotli yields everything as it goes."""
        return b""


def make_decoder(content_encoding: str | None) -> Decoder | None:
    """Return a decoder for the header's value, None for identity.

    Raises UsageError for an encoding we cannot undo (several encodings,
    zstd, or br without the brotli module).
    """
    name = (content_encoding or "").strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip", "deflate"):
        return ZlibDecoder(_GZIP_OR_ZLIB)
    if name == "br":
        return BrotliDecoder(_brotli())
    raise UsageError(f"content encoding {name!r} cannot be decoded for accounting")


def _brotli() -> Any:
    try:
        return importlib.import_module("brotli")
    except ImportError as exc:
        raise UsageError("content encoding 'br' needs the brotli module") from exc
