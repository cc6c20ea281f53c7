"""Text features for evaluation: on the driver, or on the cluster's GPUs when the driver has none.

Notable:
- Zero-shot needs every class name through every template (10,000 species x 80 templates = 800,000
  texts, again per rank): minutes on a GPU, hours on a CPU. A driver with a GPU encodes them itself
  (bf16 autocast). A driver without one on a cluster with GPUs (a KubeRay head pod, `ray job submit`
  to a GPU cluster) sends them through a Ray Data pipeline of model actors on those GPUs instead.
- Either way an encoder maps texts to [N, D] normalised float32 features on the CPU, in the texts'
  order (the pipeline's output is put back in order by index).
- The actors build the model from its spec (`modelref`), like the image pipeline.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import ray
import torch

from linnaeus.clip import towers
from linnaeus.clip.text_towers import model_tokenizer
from linnaeus.clip.towers import TEXTS_PER_BATCH
from linnaeus.eval.modelref import load_model

TextEncoder = Callable[[Sequence[str]], torch.Tensor]
ACTOR_CPUS = 0.25  # they wait on their GPU; Ray Data's own tasks keep the rest


def local_texts(model, arch: str) -> TextEncoder:
    """Texts encoded by `model` where it is (its device decides the precision), with its tower's tokenizer."""
    device = next(model.parameters()).device
    tokenize = model_tokenizer(model, arch)
    return lambda texts: towers.encode_texts(model, tokenize, texts, device)


class _EncodeTexts:
    """Ray Data actor: rows of (index, text) -> (index, features)."""

    def __init__(self, spec: str, arch: str):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encode = local_texts(load_model(spec)[0].to(self.device).eval(), arch)

    def __call__(self, batch: dict) -> dict:
        return {"i": batch["i"], "features": self.encode(batch["text"].tolist()).numpy()}


def cluster_texts(spec: str, arch: str, actors: int, gpus_each: float) -> TextEncoder:
    """Texts encoded by `actors` model actors on the cluster (Ray must be up), `gpus_each` GPU each."""

    def encode(texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            raise ValueError("no texts to encode")
        ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
        ds = ds.map_batches(_EncodeTexts, fn_constructor_args=(spec, arch), batch_size=TEXTS_PER_BATCH,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=ACTOR_CPUS, num_gpus=gpus_each)
        out: np.ndarray | None = None
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            if out is None:
                out = np.empty((len(texts), batch["features"].shape[1]), dtype=np.float32)
            out[batch["i"]] = batch["features"]
        return torch.from_numpy(out)

    return encode


def text_encoder(spec: str, arch: str) -> TextEncoder | None:
    """Model actors, one per cluster GPU, when the driver has no GPU and the cluster has some; else None:
    the driver encodes (`local_texts`, evaluation's default)."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0
    if torch.cuda.is_available() or gpus == 0:
        return None
    return cluster_texts(spec, arch, actors=gpus, gpus_each=1.0)
