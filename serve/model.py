"""The model deployment: one Predictor per replica, images batched across concurrent requests.

Notable:
- Every request's images go through `_embed`, a `@serve.batch` method, as one item (split into pieces
  of at most `max_batch_size` images): concurrent requests share GPU batches, and the batch size counts
  images, not requests (`batch_size_fn`). One batch item per request, not per image: a 32-image request
  costs the event loop one future, not 32. A piece queued before a live change lowered the size is split
  again when Ray's batcher refuses it. Batch size and wait are the deployment's `user_config`
  (`BatchingConfig`), so `serve deploy` retunes them live.
- Pixels arrive as uint8 numpy arrays: Ray hands large ones over from shared memory without a copy.
- Model work runs in a worker thread, so the replica's event loop keeps queueing the next batch while
  the GPU is busy. Label embeddings come from the Predictor's LRU cache; hits and misses are exported.
- Errors a client caused (a subset name that matches no taxon) come back as `{"error": ...}`, for the
  ingress to answer 400; anything else is a server fault.
- The label bank loads apart from the model (`BankKeeper`): with its store unreachable the replica
  starts degraded, `info()` says why, and the bank is retried every `bank_retry_s`.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np
import torch
from ray import serve

from linnaeus.config import BatchingConfig
from linnaeus.serving.bank import BankError
from linnaeus.serving.bank_keeper import BankKeeper
from linnaeus.serving.predictor import Predictor
from linnaeus.storage import S3Options
from serve.metrics import ModelMetrics

DEFAULT_BATCHING = BatchingConfig()


def _images(items: list[np.ndarray]) -> int:
    return sum(len(x) for x in items)


@serve.deployment(max_ongoing_requests=64)
class ModelServer:
    def __init__(self, model: str, bank: str | None, cache_size: int, s3: S3Options | None, cuda_graphs: int,
                 bank_retry_s: float = 10.0):
        self.predictor = Predictor(model, cache_size=cache_size, s3=s3, cuda_graphs=cuda_graphs, load_bank=False)
        self.bank = BankKeeper(self.predictor, bank, s3, bank_retry_s)
        self.metrics = ModelMetrics()
        self._recent_batches: deque[int] = deque(maxlen=1000)
        self._waiting = 0
        self._cache_seen = (0, 0)
        self._max_batch = DEFAULT_BATCHING.max_batch_size

    def reconfigure(self, user_config: dict) -> None:
        cfg = BatchingConfig.model_validate(user_config or {})
        self._max_batch = cfg.max_batch_size
        self._embed.set_max_batch_size(cfg.max_batch_size)
        self._embed.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self._recent_batches.clear()  # sizes describe the current settings only

    def info(self) -> dict:
        p = self.predictor
        return {"model": p.model_id, "arch": p.arch, "preprocess_cfg": p.preprocess_cfg,
                "bank_taxa": len(p.bank) if p.bank is not None else 0, "bank_error": self.bank.error}

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size,
                 batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s, batch_size_fn=_images)
    async def _embed(self, chunks: list[np.ndarray]) -> list[torch.Tensor]:
        sizes = [len(c) for c in chunks]
        self.metrics.batch_size.observe(sum(sizes))
        self._recent_batches.append(sum(sizes))
        pixels = torch.from_numpy(np.concatenate(chunks))  # a copy: the arrays are read-only views
        features = await asyncio.to_thread(self.predictor.encode_pixels, pixels)
        return list(features.split(sizes))

    async def features(self, pixels: np.ndarray) -> torch.Tensor:
        self._waiting += len(pixels)
        self.metrics.queue_depth.set(self._waiting)
        try:
            return await self._pieces(pixels)
        finally:
            self._waiting -= len(pixels)
            self.metrics.queue_depth.set(self._waiting)

    async def _pieces(self, pixels: np.ndarray) -> torch.Tensor:
        """Features of `pixels` through batches of at most max_batch_size images, in order."""
        step = self._max_batch
        return torch.cat(await asyncio.gather(*(self._piece(pixels[i:i + step])
                                                for i in range(0, len(pixels), step))))

    async def _piece(self, pixels: np.ndarray) -> torch.Tensor:
        try:
            return await self._embed(pixels)
        except RuntimeError:
            # `serve deploy` lowered max_batch_size while this piece queued, and Ray's batcher refuses
            # an item above the new size: split it again rather than fail a valid request.
            if len(pixels) <= self._max_batch:
                raise
            return await self._pieces(pixels)

    async def classify(self, pixels: np.ndarray, labels: list[str], k: int, templates: str) -> list:
        features = await self.features(pixels)
        try:
            return await asyncio.to_thread(self.predictor.classify_features, features, labels, k, templates)
        finally:
            self._export_cache_counts()

    async def taxonomy(self, pixels: np.ndarray, rank: str, k: int, subset: list[str] | None):
        if self.bank.error:  # this replica's bank is not in (yet): not the client's fault
            return {"unavailable": self.bank.error}
        features = await self.features(pixels)
        try:
            return await asyncio.to_thread(self.predictor.predict_features, features, rank, k, subset)
        except BankError as exc:
            return {"error": str(exc)}

    async def embed_pixels(self, pixels: np.ndarray) -> list[list[float]]:
        return (await self.features(pixels)).tolist()

    async def embed_texts(self, texts: list[str]) -> list[list[float]]:
        return (await asyncio.to_thread(self.predictor.embed_texts, texts)).tolist()

    def batch_sizes(self) -> list[int]:
        """The sizes of the last 1,000 model batches (for tests and operators' spot checks)."""
        return list(self._recent_batches)

    def cache_stats(self) -> dict:
        cache = self.predictor.cache
        return {"hits": cache.hits, "misses": cache.misses, "entries": len(cache)}

    def _export_cache_counts(self) -> None:
        cache, (hits, misses) = self.predictor.cache, self._cache_seen
        if cache.hits > hits:
            self.metrics.cache_hits.inc(cache.hits - hits)
        if cache.misses > misses:
            self.metrics.cache_misses.inc(cache.misses - misses)
        self._cache_seen = (cache.hits, cache.misses)
