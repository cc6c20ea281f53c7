"""The background batch prefetcher: order, errors where they happened, and stopping a blocked producer."""

from __future__ import annotations

import time

import pytest
import torch

from linnaeus.data.prefetch import Prefetcher


def _batches(n: int, fail_at: int | None = None, produced: list | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad batch {i}")
        if produced is not None:
            produced.append(i)
        yield {"x": torch.full((2,), i)}


def test_batches_come_out_in_order_and_the_end_repeats():
    it = Prefetcher(lambda: _batches(5), "cpu", depth=2)
    assert [int(b["x"][0]) for b in it] == [0, 1, 2, 3, 4]
    with pytest.raises(StopIteration):
        next(it)


def test_a_producer_error_is_raised_at_the_batch_where_it_happened():
    it = Prefetcher(lambda: _batches(5, fail_at=3), "cpu")
    assert [int(next(it)["x"][0]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad batch 3"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_the_producer_stays_at_most_depth_ahead_and_close_stops_it():
    produced: list[int] = []
    it = Prefetcher(lambda: _batches(1000, produced=produced), "cpu", depth=2)
    next(it)
    time.sleep(0.3)
    assert len(produced) <= 1 + 2 + 1  # taken + queued + one waiting to be queued
    it.close()
    assert not it.thread.is_alive()


def test_dropping_the_prefetcher_stops_its_thread():
    import gc

    it = Prefetcher(lambda: _batches(1000), "cpu", depth=1)
    thread = it.thread
    next(it)
    del it
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_next_after_close_ends_instead_of_blocking():
    it = Prefetcher(lambda: _batches(1000), "cpu", depth=2)
    next(it)
    it.close()
    with pytest.raises(StopIteration):
        next(it)


def test_an_empty_stream_ends_at_once():
    it = Prefetcher(lambda: iter(()), "cpu")
    it.thread.join(timeout=2)
    with pytest.raises(StopIteration):
        next(it)
