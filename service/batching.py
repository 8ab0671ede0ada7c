"""Opportunistic micro-batching of a model call across concurrent requests.

While one batch runs in a worker thread, the requests that arrive queue up; when it finishes, all of
them run as the next batch. A lone request runs at once (no waiting window, so no added latency at low
load); under load, batches form by themselves, and a batched call costs far less per row than single
calls (MiniLM, measured ad hoc here: about half per text at a batch of 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class MicroBatcher:
    def __init__(self, fn: Callable[[Sequence[Any]], np.ndarray], max_batch: int = 16) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.pending: list[tuple[Any, asyncio.Future[np.ndarray]]] = []
        self.running = False

    async def __call__(self, item: Any) -> np.ndarray:
        """The model's output row for ``item`` (shape ``[1, ...]``)."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    out = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                except Exception as exc:  # every waiter gets the error, the batcher goes on
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for row, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result(out[row : row + 1])
        finally:
            self.running = False
