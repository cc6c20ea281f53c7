"""The model deployment's splitting of requests into batch items, without Ray: the batcher is faked."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest
import torch

from serve.model import ModelServer

REFUSED = "Size of item is greater than max_batch_size. Please increase the max_batch_size"


def _server(max_batch: int, embed):
    server = object.__new__(ModelServer.func_or_class)  # no Predictor, no replica: only the splitting
    server._max_batch, server._waiting = max_batch, 0
    server.metrics = types.SimpleNamespace(queue_depth=types.SimpleNamespace(set=lambda value: None))
    server._embed = embed
    return server


def _images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 2, 2), np.uint8)


def _first_pixel(piece: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(piece[:, 0, 0, :1].astype(np.float32))


def test_a_piece_refused_after_the_batch_size_was_lowered_is_split_again_in_order():
    seen = []

    async def embed(piece):
        seen.append(len(piece))
        if len(seen) == 1:
            server._max_batch = 2  # a live `serve deploy` while the first piece waited
        if len(piece) > server._max_batch:
            raise RuntimeError(REFUSED)
        return _first_pixel(piece)

    server = _server(4, embed)
    features = asyncio.run(server.features(_images(10)))
    assert features[:, 0].tolist() == list(range(10))
    assert seen[:3] == [4, 4, 2] and max(seen[3:]) == 2
    assert server._waiting == 0


def test_other_batcher_errors_still_fail_the_request():
    async def embed(piece):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="CUDA"):
        asyncio.run(_server(4, embed).features(_images(3)))
