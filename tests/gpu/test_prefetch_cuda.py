"""The prefetcher on CUDA: batches made on its side stream arrive complete on the consumer's stream
(skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from linnaeus.data.prefetch import Prefetcher

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _slow_batches(n: int):
    """Each batch ends with a long kernel chain on the producer's stream, so a consumer that did not
    wait for it would read unfinished values."""
    for i in range(n):
        x = torch.full((2048, 2048), 0.5, device="cuda")
        mean_of = torch.full((2048, 2048), 1.0 / 2048, device="cuda")
        for _ in range(20):  # a constant matrix times an averaging one stays the same constant
            x = x @ mean_of
        yield {"x": x + i, "i": torch.tensor([i])}


def test_side_stream_batches_are_complete_when_the_consumer_reads_them():
    seen = []
    for batch in Prefetcher(lambda: _slow_batches(6), torch.device("cuda"), depth=2):
        seen.append((int(batch["i"]), float(batch["x"].mean())))  # read on the consumer's stream
    assert [i for i, _ in seen] == list(range(6))
    assert all(mean == pytest.approx(0.5 + i, rel=1e-3) for i, mean in seen)
