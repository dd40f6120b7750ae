"""llama.cpp's own fields: `timings`, the native /completion API, error counts.

`timings` rides on OpenAI-shaped chunks (the finish chunk, or the final usage
chunk) and on native frames: input is `cache_n + prompt_n`, output
`predicted_n`, and `predicted_per_second` is the server's own speed. The
native /completion stream ends with a `"stop": true` frame and no `[DONE]`;
every frame carries running `tokens_evaluated` / `tokens_predicted` counts.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage.tally import Tally, count, seconds


def read_timings(tally: Tally, timings: Any) -> None:
    """Report a `timings` object: counts, speed and prompt time."""
    if not isinstance(timings, dict):
        return
    cached = count(timings.get("cache_n"))
    prompt = count(timings.get("prompt_n"))
    if prompt is not None and cached is not None:
        prompt += cached
    tally.report(input=prompt, output=count(timings.get("predicted_n")), cached=cached)
    speed = seconds(timings.get("predicted_per_second"))
    if speed is not None:
        tally.tokens_per_second = speed
    prompt_ms = seconds(timings.get("prompt_ms"))
    if prompt_ms is not None:
        tally.server_ttft_ms = round(prompt_ms)
    tally.details["timings"] = timings


def read_error_counts(tally: Tally, error: Any) -> None:
    """Report the prompt size of a context-overflow error (nothing was generated).

    llama.cpp's `exceed_context_size_error` names `n_prompt_tokens`: the only
    input count such a request ever gets.
    """
    if isinstance(error, dict):
        prompt = count(error.get("n_prompt_tokens"))
        if prompt:
            tally.report(input=prompt, output=0)


class CompletionReader:
    """The native /completion API, streamed or whole."""

    __slots__ = ()

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one frame: text, running counts, and the final frame's extras."""
        tally.add_text(obj.get("content"))
        tally.set_model(obj.get("model"))
        timings = obj.get("timings")
        if timings:
            read_timings(tally, timings)
        tally.report(
            input=count(obj.get("tokens_evaluated")),
            output=count(obj.get("tokens_predicted")),
        )
        if obj.get("stop") is True:
            tally.set_finish(obj.get("stop_type") or "stop")

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a whole answer: the same fields as the final frame."""
        self.frame(tally, obj, None)
