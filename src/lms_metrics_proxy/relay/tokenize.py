"""Exact counts from the model server's own tokenizer, where it has one.

llama.cpp's server answers `POST /tokenize` (and `POST /apply-template` for
chat messages) with the model's real tokens, which beats any offline
estimate. Other servers answer 404 there; after the first such answer the
proxy stops asking. Used only for requests whose answer carried no usage.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import aiohttp
import orjson
from yarl import URL

from lms_metrics_proxy.usage import Exchange, Usage
from lms_metrics_proxy.usage.estimate import with_counts

logger = logging.getLogger(__name__)

# Counting is a side job: never let it hold a finished request for long.
TIMEOUT = aiohttp.ClientTimeout(total=5)
CHAT_DIALECTS = frozenset({"openai.chat"})
# Answers that mean "no such endpoint here", as opposed to "not right now".
NOT_THERE = frozenset({400, 401, 403, 404, 405, 501})


class ServerTokenizer:
    """Count with the server's `/tokenize` until it turns out to have none."""

    def __init__(self, upstream: URL | str) -> None:
        self.upstream = str(upstream).rstrip("/")
        self.available: bool | None = None  # None until the first answer

    async def fill(
        self, session: aiohttp.ClientSession, exchange: Exchange, usage: Usage
    ) -> Usage:
        """Return `usage` with missing counts taken from the server's tokenizer."""
        if self.available is False:
            return usage
        input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        if input_tokens is None and exchange.prompt_text:
            input_tokens = await self._count_input(session, exchange)
        if output_tokens is None and (usage.response_text or usage.reasoning_text):
            text = (usage.reasoning_text or "") + (usage.response_text or "")
            output_tokens = await self.count(session, text)
        if (input_tokens, output_tokens) == (usage.input_tokens, usage.output_tokens):
            return usage
        counted = with_counts(usage, input_tokens, output_tokens)
        details = {**usage.details, "estimated_by": "server /tokenize"}
        return dataclasses.replace(counted, details=details)

    async def _count_input(
        self, session: aiohttp.ClientSession, exchange: Exchange
    ) -> int | None:
        if exchange.dialect in CHAT_DIALECTS and exchange.prompt:
            prompt = await self._apply_template(session, exchange.prompt)
            if prompt is not None:
                return await self.count(session, prompt)
        return await self.count(session, exchange.prompt_text)

    async def _apply_template(
        self, session: aiohttp.ClientSession, messages: str
    ) -> str | None:
        body = b'{"messages":' + messages.encode() + b"}"
        answer = await self._post(session, "/apply-template", body)
        prompt = answer.get("prompt") if answer else None
        return prompt if isinstance(prompt, str) else None

    async def count(self, session: aiohttp.ClientSession, text: str) -> int | None:
        """Return the number of tokens the server makes of `text`, or None."""
        body = orjson.dumps({"content": text, "add_special": True})
        answer = await self._post(session, "/tokenize", body)
        tokens = answer.get("tokens") if answer else None
        if not isinstance(tokens, list):
            if answer is not None:
                self.available = False
            return None
        self.available = True
        return len(tokens)

    async def _post(
        self, session: aiohttp.ClientSession, path: str, body: bytes
    ) -> dict[str, Any] | None:
        try:
            async with session.post(
                f"{self.upstream}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT,
            ) as response:
                if response.status in NOT_THERE:
                    self._give_up(response.status)
                    return None
                if response.status != 200:
                    return None
                answer = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as error:
            logger.debug("Server tokenizer did not answer cause=%s", error)
            return None
        return answer if isinstance(answer, dict) else {}

    def _give_up(self, status: int) -> None:
        if self.available is None:
            logger.info(
                "Model server has no /tokenize (HTTP %s); estimates use the "
                "offline tokenizer",
                status,
            )
        self.available = False
