"""Newline-delimited JSON framing (Ollama's native streams): bytes in, lines out.

Holds only the current incomplete line. Lines may end with LF or CR LF;
blank lines are skipped. Decoding is left to the JSON parser, so a UTF-8
character cut between two chunks is never decoded half.
"""

from __future__ import annotations


class LineSplitter:
    """Cut a byte stream into whole, non-blank lines."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = bytearray()

    @property
    def held(self) -> int:
        """Return how many bytes of an incomplete line are held."""
        return len(self._held)

    def split(self, data: bytes) -> list[bytes]:
        """Return the lines that `data` completes, without their line endings."""
        end = data.rfind(b"\n")
        if end < 0:
            self._held += data
            return []
        if self._held:
            self._held += data[: end + 1]
            text = bytes(self._held)
        else:
            text = data[: end + 1]
        self._held = bytearray(data[end + 1 :])
        return [line for line in text.split(b"\n") if line.strip()]

    def take_rest(self) -> bytes:
        """Return and forget the incomplete last line."""
        rest = bytes(self._held)
        self._held = bytearray()
        return rest
