"""Time the meter per streamed event (not a test): `python tests/usage/perf_meter.py`.

Feeds a stream of typical OpenAI chat chunks (about 250 bytes each, one event
per chunk, as a model server writes them) through `Meter.feed` and through
`Meter.filter`, and prints the best of several runs in µs of CPU per event,
JSON parsing included (CPU time, so other work on a busy machine counts less).
"""

from __future__ import annotations

import time

from lms_metrics_proxy.usage import Meter, inspect_request

EVENTS = 5_000
RUNS = 20
REQUEST = (
    b'{"model":"qwen2.5-7b-instruct",'
    b'"messages":[{"role":"user","content":"Hi"}],"stream":true}'
)
CHUNK = (
    b'data: {"id":"chatcmpl-h7d2m0q9s4x1k8v3c6n5e","object":"chat.completion.chunk",'
    b'"created":1748779260,"model":"qwen2.5-7b-instruct","system_fingerprint":'
    b'"qwen2.5-7b-instruct","choices":[{"index":0,"delta":{"content":" word"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)
USAGE = (
    b'data: {"id":"chatcmpl-h7d2m0q9s4x1k8v3c6n5e","object":"chat.completion.chunk",'
    b'"created":1748779260,"model":"qwen2.5-7b-instruct","choices":[],'
    b'"usage":{"prompt_tokens":21,"completion_tokens":7,"total_tokens":28}}\n\n'
)


def run(filtering: bool) -> float:
    """Return µs per event for one stream of EVENTS chunks."""
    exchange = inspect_request("POST", "/v1/chat/completions", REQUEST)
    meter = Meter(exchange, 200, "text/event-stream", None, 100_000)
    step = meter.filter if filtering else meter.feed
    start = time.process_time()
    for _ in range(EVENTS):
        step(CHUNK)
    step(USAGE)
    meter.flush()
    usage = meter.finish()
    elapsed = time.process_time() - start
    assert usage.input_tokens == 21, usage
    return elapsed / (EVENTS + 1) * 1e6


def main() -> None:
    print(f"event size: {len(CHUNK)} bytes")
    for filtering in (False, True):
        best = min(run(filtering) for _ in range(RUNS))
        print(f"{'filter' if filtering else 'feed':6}: {best:.2f} µs per event")


if __name__ == "__main__":
    main()
