"""The one way to start a background task: keep a reference and name it.

asyncio only keeps weak references to tasks, so a task nobody holds can be
collected mid-flight. Every task the proxy starts goes through `spawn`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Start `coro` as a named task that lives until it finishes."""
    task = asyncio.create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_forget)
    return task


def _forget(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("Background task failed task=%s", task.get_name(), exc_info=error)
