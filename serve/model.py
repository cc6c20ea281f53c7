"""The model deployment: one Predictor per replica, images batched across concurrent requests.

Notable:
- Every image of every request goes through `_embed`, a `@serve.batch` method: concurrent requests
  share GPU batches. Batch size and wait are the deployment's `user_config` (`BatchingConfig`), so
  `serve deploy` retunes them live.
- Model work runs in a worker thread, so the replica's event loop keeps queueing the next batch while
  the GPU is busy. Label embeddings come from the Predictor's LRU cache; hits and misses are exported.
- Errors a client caused (a subset name that matches no taxon) come back as `{"error": ...}`, for the
  ingress to answer 400; anything else is a server fault.
"""

from __future__ import annotations

import asyncio
from collections import deque

import torch
from ray import serve

from linnaeus.config import BatchingConfig
from linnaeus.storage import S3Options
from linnaeus.serving.bank import BankError
from linnaeus.serving.predictor import Predictor
from serve.metrics import ModelMetrics

DEFAULT_BATCHING = BatchingConfig()


@serve.deployment(max_ongoing_requests=64)
class ModelServer:
    def __init__(self, model: str, bank: str | None, cache_size: int, s3: S3Options | None, cuda_graphs: int):
        self.predictor = Predictor(model, bank, cache_size=cache_size, s3=s3, cuda_graphs=cuda_graphs)
        self.metrics = ModelMetrics()
        self._recent_batches: deque[int] = deque(maxlen=1000)
        self._waiting = 0
        self._cache_seen = (0, 0)

    def reconfigure(self, user_config: dict) -> None:
        cfg = BatchingConfig.model_validate(user_config or {})
        self._embed.set_max_batch_size(cfg.max_batch_size)
        self._embed.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self._recent_batches.clear()  # sizes describe the current settings only

    def info(self) -> dict:
        p = self.predictor
        return {"model": p.model_id, "arch": p.arch, "preprocess_cfg": p.preprocess_cfg,
                "bank_taxa": len(p.bank) if p.bank is not None else 0}

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size,
                 batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s)
    async def _embed(self, pixels: list[torch.Tensor]) -> list[torch.Tensor]:
        self.metrics.batch_size.observe(len(pixels))
        self._recent_batches.append(len(pixels))
        features = await asyncio.to_thread(self.predictor.encode_pixels, torch.stack(pixels))
        return list(features)

    async def features(self, pixels: torch.Tensor) -> torch.Tensor:
        self._waiting += len(pixels)
        self.metrics.queue_depth.set(self._waiting)
        try:
            return torch.stack(await asyncio.gather(*(self._embed(p) for p in pixels)))
        finally:
            self._waiting -= len(pixels)
            self.metrics.queue_depth.set(self._waiting)

    async def classify(self, pixels: torch.Tensor, labels: list[str], k: int, templates: str) -> list:
        features = await self.features(pixels)
        try:
            return await asyncio.to_thread(self.predictor.classify_features, features, labels, k, templates)
        finally:
            self._export_cache_counts()

    async def taxonomy(self, pixels: torch.Tensor, rank: str, k: int, subset: list[str] | None):
        features = await self.features(pixels)
        try:
            return await asyncio.to_thread(self.predictor.predict_features, features, rank, k, subset)
        except BankError as exc:
            return {"error": str(exc)}

    async def embed_images(self, pixels: torch.Tensor) -> list[list[float]]:
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
