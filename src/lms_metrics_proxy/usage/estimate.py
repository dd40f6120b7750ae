"""Token estimates for what the server did not count, with an offline tokenizer.

Uses the BPE tokenizer of the optional `bpe-openai` package (`cl100k_base`;
install the `tokenizer` extra). It is loaded on first use, never when this
package is imported (about 30 ms and 31 MB, see `_bindings`), on a thread
off the event loop.
Without the package, `estimate` changes nothing and counts stay null.
`clip_text` (from `text`) is re-exported for the recorder, which caps the
stored prompt and response next to estimating.

Local models use other vocabularies, so an estimate is a rough figure (within
a few tens of percent for English), marked `usage_source = "estimated"`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from lms_metrics_proxy.usage.exchange import Exchange
from lms_metrics_proxy.usage.meter import Usage
from lms_metrics_proxy.usage.text import clip_text

__all__ = ["clip_text", "count_tokens", "estimate", "load_tokenizer", "with_counts"]

logger = logging.getLogger(__name__)

ENCODING = "cl100k_base"
# A chat message costs a few tokens beyond its text (role and separators),
# and the reply is primed with a few more (as OpenAI's cookbook counts them).
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3
# The tokenizer refuses very long inputs; text is counted in pieces, and past
# MAX_COUNTED_CHARS the count is scaled from the part counted.
PIECE_CHARS = 100_000
MAX_COUNTED_CHARS = 4_000_000
# What bpe-openai raises on bad input or a broken install (its own errors
# derive from RuntimeError, ValueError or KeyError).
_FAILURES = (RuntimeError, ValueError, KeyError, OSError, AttributeError)


class _Tokenizer:
    """The tokenizer, loaded once on first use by whichever thread asks first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self._encoding: Any = None
        self.warned = False

    def get(self) -> Any:
        with self._lock:
            if not self._loaded:
                self._encoding = _load()
                self._loaded = True
            return self._encoding

    def forget(self) -> None:
        """Unload, so the next use loads again (for tests)."""
        with self._lock:
            self._loaded = False
            self._encoding = None
            self.warned = False


_TOKENIZER = _Tokenizer()


def _load() -> Any:
    try:
        return _bindings().tokenizer_for_encoding(ENCODING)
    except ImportError:
        logger.debug("Token estimates are off: bpe-openai is not installed")
    except _FAILURES as exc:
        logger.warning(
            "Token estimates are off: the tokenizer did not load encoding=%s cause=%s",
            ENCODING,
            exc,
        )
    return None


def _bindings() -> Any:
    """Return bpe-openai's compiled module, without its package's start-up.

    `import bpe_openai` decodes all three vocabularies into Python dicts
    (about 1.1 s of CPU and 97 MB that stay). The compiled module carries its
    own copy: loaded alone it costs 30 ms and 31 MB for cl100k. Its file is
    found next to the package; if the layout ever changes, the package's own
    import is the fallback.
    """
    name = "bpe_openai._bindings"
    if "bpe_openai" in sys.modules or name in sys.modules:
        # Imported already (or blocked, as tests do): the usual way.
        return importlib.import_module(name)
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None:
        raise ImportError("bpe-openai is not installed")
    folders = list(spec.submodule_search_locations or ())
    files = [f for d in folders for f in Path(d).glob("_bindings*.so")]
    if not files:
        return importlib.import_module(name)
    loader = importlib.machinery.ExtensionFileLoader(name, str(files[0]))
    found = importlib.util.spec_from_file_location(name, files[0], loader=loader)
    assert found is not None
    module = importlib.util.module_from_spec(found)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


def load_tokenizer() -> bool:
    """Load the tokenizer now (slow: call it off the event loop); True if usable."""
    return _TOKENIZER.get() is not None


def count_tokens(text: str) -> int | None:
    """Return the estimated token count of `text`, or None without a tokenizer."""
    encoding = _TOKENIZER.get()
    if encoding is None:
        return None
    if not text:
        return 0
    counted = text[:MAX_COUNTED_CHARS]
    tokens: int = sum(
        encoding.count(counted[start : start + PIECE_CHARS])
        for start in range(0, len(counted), PIECE_CHARS)
    )
    if len(text) > len(counted):
        tokens = round(tokens * len(text) / len(counted))
    return tokens


def estimate(exchange: Exchange, usage: Usage) -> Usage:
    """Return `usage` with the input and output counts it lacks estimated.

    Input is counted from the request's flattened text plus a few tokens per
    chat message; output from the response and reasoning text. Counts the
    server gave are kept. `usage_source` becomes "estimated" when the server
    gave no count above zero, and stays "upstream" when it did (an Anthropic
    stream that failed after `message_start` has its input, not its output).
    Returns `usage` itself when there is nothing to count or no tokenizer.
    """
    missing_input = usage.input_tokens is None
    missing_output = usage.output_tokens is None
    texts = (exchange.prompt_text, usage.response_text, usage.reasoning_text)
    if not (missing_input or missing_output) or not any(texts):
        return usage
    try:
        counts = _counts(exchange, usage, missing_input, missing_output)
    except _FAILURES as exc:
        _warn_once(exc)
        return usage
    if counts is None:
        return usage
    return with_counts(usage, *counts)


def _counts(
    exchange: Exchange, usage: Usage, missing_input: bool, missing_output: bool
) -> tuple[int | None, int | None] | None:
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    if missing_input:
        input_tokens = count_tokens(exchange.prompt_text)
        if input_tokens is None:
            return None
        if exchange.message_count:
            input_tokens += exchange.message_count * TOKENS_PER_MESSAGE + REPLY_PRIMING
    if missing_output:
        answer = count_tokens(usage.response_text or "")
        thought = count_tokens(usage.reasoning_text or "")
        if answer is None or thought is None:
            return None
        output_tokens = answer + thought
    return input_tokens, output_tokens


def with_counts(
    usage: Usage, input_tokens: int | None, output_tokens: int | None
) -> Usage:
    """Return `usage` with estimated counts; "estimated" unless the server counted."""
    from_server = (usage.input_tokens, usage.output_tokens, usage.total_tokens)
    total = usage.total_tokens
    if not total and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens
    return dataclasses.replace(
        usage,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        usage_source=usage.usage_source if any(from_server) else "estimated",
    )


def _warn_once(exc: BaseException) -> None:
    if not _TOKENIZER.warned:
        _TOKENIZER.warned = True
        logger.warning("Token estimate failed, counts stay unknown cause=%s", exc)
