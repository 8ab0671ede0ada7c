"""Micro-batching: concurrent callers share one call, a lone caller runs at once, errors reach every
waiter; stacked tower inputs pad profile slots."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.towers import stack_feeds


def test_concurrent_calls_share_batches_and_keep_their_rows() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def model(items: list[int]) -> np.ndarray:
        calls.append(len(items))
        gate.wait(1)  # the first batch holds the thread while the others queue
        return np.asarray([[i, i * 2] for i in items], np.float32)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(model, max_batch=8)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 11)]
        await asyncio.sleep(0.05)
        gate.set()
        return [await first, *[await r for r in rest]]

    out = asyncio.run(main())
    assert [o.tolist() for o in out] == [[[i, i * 2]] for i in range(11)]
    assert calls == [1, 8, 2]  # a lone call at once, then the queue in batches of at most 8


def test_a_failed_batch_fails_its_callers_and_the_next_call_works() -> None:
    def model(items: list[int]) -> np.ndarray:
        if -1 in items:
            raise ValueError("bad input")
        return np.asarray([[i] for i in items], np.float32)

    async def main() -> None:
        batcher = MicroBatcher(model)
        with pytest.raises(ValueError, match="bad input"):
            await batcher(-1)
        assert (await batcher(3)).tolist() == [[3.0]]

    asyncio.run(main())


def test_stack_feeds_pads_profile_slots_with_masked_zeros() -> None:
    a = {"history": np.ones((1, 4), np.float32), "profiles": np.ones((1, 1, 3), np.float32),
         "profile_mask": np.ones((1, 1), np.float32)}  # fmt: skip
    b = {"history": np.zeros((1, 4), np.float32), "profiles": np.full((1, 3, 3), 2, np.float32),
         "profile_mask": np.ones((1, 3), np.float32)}  # fmt: skip
    out = stack_feeds([a, b])
    assert out["history"].shape == (2, 4) and out["profiles"].shape == (2, 3, 3)
    assert out["profile_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert out["profiles"][0, 1:].sum() == 0
