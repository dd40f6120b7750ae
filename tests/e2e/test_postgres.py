"""The whole path on PostgreSQL: the proxy as a process, rows read back over HTTP."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import openai
import pytest
from tests.conftest import Upstream, start_proxy, stop_proxy

DSN = os.environ.get("TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(DSN is None, reason="TEST_POSTGRES_URL is not set"),
]


def test_requests_are_recorded_in_postgres(tmp_path: Path, upstream: Upstream) -> None:
    assert DSN is not None
    proxy = start_proxy(tmp_path, upstream.url, {"DATABASE_URL": DSN})
    name = f"pg-{uuid.uuid4().hex[:8]}"
    client = openai.OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers={
            "X-Replay": "lmstudio-chat-stream-usage.sse",
            "X-Client-Name": name,
        },
    )
    try:
        chunks = list(
            client.chat.completions.create(
                model="qwen2.5-7b-instruct",
                messages=[{"role": "user", "content": "Hello!"}],
                stream=True,
            )
        )
        row = proxy.row(name)
    finally:
        assert stop_proxy(proxy) == 0

    assert chunks
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        21,
        7,
        28,
    )
    assert row["start_time"].endswith("Z")
