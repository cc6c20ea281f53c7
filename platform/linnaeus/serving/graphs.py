"""The image tower as CUDA graphs: one captured graph per batch-size bucket, replayed for each batch.

Why: an eager ViT-B/16 forward launches its kernels one by one from Python, holding the GIL, so at
small batches the CPU, not the GPU, sets the pace and the service's event loop cannot queue the next
requests meanwhile. A graph replay is one call: on the H100 host a batch of one took 6.9 ms eager and
1.3 ms replayed (docs/benchmarks.md). Batches are padded up to the next bucket (1, 2, 4, ... max); rows are
independent in the image tower, so padding never changes a real row's features.

Captured on the model's device under the same bf16 autocast as the eager path, with autocast's
weight cache off (a cached cast would be freed after capture). CUDA only; the Predictor falls back
to eager on CPU.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from linnaeus.clip.preprocess import normalise
from linnaeus.clip.towers import autocast


def buckets(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class GraphedImageEncoder:
    def __init__(self, model, image_size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor,
                 max_batch: int = 256):
        self.device = mean.device
        self.sizes = buckets(max_batch)
        self._lock = threading.Lock()  # static buffers: one replay at a time
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

        def forward(pixels: torch.Tensor) -> torch.Tensor:
            with autocast(mean.device, cache=False):
                features = model.encode_image(normalise(pixels, mean, std))
            return F.normalize(features.float(), dim=-1)

        with torch.no_grad():  # not inference_mode: the static input must stay writable outside it
            for size in reversed(self.sizes):  # largest first: later captures reuse its memory
                self._graphs[size] = self._capture(forward, size, image_size)

    def _capture(self, forward, size: int, image_size: tuple[int, int]):
        static_in = torch.zeros(size, 3, *image_size, dtype=torch.uint8, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                forward(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = forward(static_in)
        return graph, static_in, static_out

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] (any device) -> float32 normalised features [B, D] on the CPU."""
        out = []
        for start in range(0, len(pixels), self.sizes[-1]):
            chunk = pixels[start:start + self.sizes[-1]]
            size = next(s for s in self.sizes if s >= len(chunk))
            graph, static_in, static_out = self._graphs[size]
            with self._lock, torch.no_grad():
                static_in[:len(chunk)].copy_(chunk, non_blocking=True)
                graph.replay()
                out.append(static_out[:len(chunk)].cpu())
        return torch.cat(out)
