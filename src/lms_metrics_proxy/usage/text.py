"""Plain text out of request and response JSON: flattening and capping.

Owns how message content (a string, or a list of typed parts) becomes plain
text for counting, and how stored text is cut to `MAX_CONTENT_CHARS`. Pure
functions on values; nothing here parses bytes.
"""

from __future__ import annotations

from typing import Any, overload

import orjson

TRUNCATION_MARK = "…[truncated]"

# Part types whose text is read as text; images, audio and files are not.
_TEXT_KEYS = ("text", "content", "input", "arguments")


@overload
def clip_text(text: str, limit: int) -> str: ...


@overload
def clip_text(text: None, limit: int) -> None: ...


def clip_text(text: str | None, limit: int) -> str | None:
    """Return `text` cut to at most `limit` characters, marked where it was cut.

    Used for every stored text (prompt, response) with `MAX_CONTENT_CHARS`;
    None stays None.
    """
    if text is None or len(text) <= limit:
        return text
    keep = limit - len(TRUNCATION_MARK)
    if keep <= 0:
        return text[: max(limit, 0)]
    return text[:keep] + TRUNCATION_MARK


def flatten(content: Any) -> str:
    """Return the plain text of message content: a string or a list of parts.

    Parts may be strings or objects with `text` (OpenAI, Anthropic, Responses),
    `content` (Anthropic tool results) or `input`/`arguments` (tool calls,
    serialised). Image, audio and file parts add nothing.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = (flatten(part) for part in content)
        return "\n".join(piece for piece in pieces if piece)
    if isinstance(content, dict):
        return _flatten_part(content)
    return ""


def _flatten_part(part: dict[str, Any]) -> str:
    for key in _TEXT_KEYS:
        value = part.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return flatten(value)
        if isinstance(value, dict) and key in ("input", "arguments"):
            return compact(value)
    return ""


def compact(value: Any) -> str:
    """Return `value` as compact JSON text (UTF-8 kept as is).

    Raises TypeError for a value JSON cannot hold; values parsed from JSON
    always can.
    """
    return orjson.dumps(value).decode()
