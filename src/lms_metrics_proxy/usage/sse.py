"""Server-sent events framing: bytes in any split, whole events out.

Follows the WHATWG event-stream rules on bytes: lines end with LF, CRLF or a
lone CR; a blank line ends an event; `:` lines are comments; several `data:`
lines join with LF; the space after the colon is optional. Works on bytes so
a UTF-8 character cut between two chunks is never decoded half; each event's
data is decoded by the JSON parser. Holds only the current incomplete event.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LINE_END = re.compile(rb"\r\n|\r|\n")
# The longest blank line is CR LF CR LF: a match that a new chunk completes
# starts at most this many bytes before the old end of the buffer.
_OVERLAP = 3
_COLON = 0x3A
_CR = 0x0D
_LF = 0x0A


class EventSplitter:
    """Cut a byte stream into whole events (each with its blank line)."""

    __slots__ = ("_cr_end", "_held", "_scan")

    def __init__(self) -> None:
        self._held = bytearray()
        self._scan = 0  # where to resume searching in `_held`
        self._cr_end = False  # the last event ended on CR, at the end of a chunk

    @property
    def held(self) -> int:
        """Return how many bytes of an incomplete event are held."""
        return len(self._held)

    def split(self, data: bytes) -> list[bytes]:
        """Return the events that `data` completes, in order, as raw bytes.

        When the previous event ended on a CR that closed a chunk and `data`
        opens with the LF of that CR LF, the LF comes back alone, first.
        """
        blocks: list[bytes] = []
        if not data:
            return blocks
        if self._cr_end:
            self._cr_end = False
            if data[:1] == b"\n":
                blocks.append(b"\n")
                data = data[1:]
        if self._held:
            self._held += data
            self._cut(self._held, blocks)
        else:
            self._cut(data, blocks)
        return blocks

    def _cut(self, buf: bytes | bytearray, blocks: list[bytes]) -> None:
        start, scan = 0, self._scan
        if buf.find(b"\r", scan) < 0:
            # Fast path: without CR, only LF LF can end an event.
            end = buf.find(b"\n\n", scan)
            while end >= 0:
                blocks.append(bytes(buf[start : end + 2]))
                start = end + 2
                end = buf.find(b"\n\n", start)
        else:
            for end in _blank_ends(buf, scan):
                blocks.append(bytes(buf[start:end]))
                start = end
        self._keep(buf, start)

    def _keep(self, buf: bytes | bytearray, start: int) -> None:
        size = len(buf)
        if start == size:
            self._held = bytearray()
            self._scan = 0
            self._cr_end = size > 0 and buf[-1] == _CR
            return
        if buf is self._held:
            del self._held[:start]
        else:
            self._held = bytearray(buf[start:])
        self._scan = max(size - start - _OVERLAP, 0)

    def take_rest(self) -> bytes:
        """Return and forget the bytes of the incomplete last event."""
        rest = bytes(self._held)
        self._held = bytearray()
        self._scan = 0
        return rest


def parse_event(block: bytes) -> tuple[bytes | None, bytes | None]:
    """Return the event name and data of one event, each None when absent.

    The non-standard `error:` field (llama.cpp) reads as an event named
    `error` with that data.
    """
    # Most events are one `data:` line and a blank line, framed with LF.
    if block[:5] == b"data:" and block.find(b"\n") == len(block) - 2:
        if b"\r" not in block:
            value = block[5:-2]
            return None, value[1:] if value[:1] == b" " else value
    lines = block.split(b"\n") if b"\r" not in block else _LINE_END.split(block)
    event: bytes | None = None
    data: bytes | None = None
    for line in lines:
        if not line or line[0] == _COLON:
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data = value if data is None else data + b"\n" + value
        elif name == b"event":
            event = value
        elif name == b"error":
            event = b"error"
            data = value if data is None else data + b"\n" + value
    return event, data


def _blank_ends(buf: bytes | bytearray, pos: int) -> Iterator[int]:
    """Yield the end of each blank line (two line endings in a row) after `pos`.

    CR LF is one line ending. A CR that closes the buffer may be the first
    half of a CR LF, so it cannot start a blank line until more bytes come;
    it can end one.
    """
    size = len(buf)
    cr, lf = buf.find(b"\r", pos), buf.find(b"\n", pos)
    while cr >= 0 or lf >= 0:
        at = lf if cr < 0 or 0 <= lf < cr else cr
        after = _past_ending(buf, at, size)
        if after < 0 or after == size:
            return
        if buf[after] in (_CR, _LF):
            end = _past_ending(buf, after, size)
            yield size if end < 0 else end
            after = size if end < 0 else end
        if cr >= 0 and cr < after:
            cr = buf.find(b"\r", after)
        if lf >= 0 and lf < after:
            lf = buf.find(b"\n", after)


def _past_ending(buf: bytes | bytearray, at: int, size: int) -> int:
    # The index after the line ending at `at`; -1 for a CR that closes the buffer.
    if buf[at] == _LF:
        return at + 1
    if at + 1 == size:
        return -1
    return at + 2 if buf[at + 1] == _LF else at + 1


def complete_lines(rest: bytes) -> bytes:
    """Return the complete lines of an unterminated last event (for the end)."""
    cut = max(rest.rfind(b"\n"), rest.rfind(b"\r"))
    return rest[: cut + 1]
