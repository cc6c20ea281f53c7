"""A model's two towers on its device: the one way training-free code (evaluation, label banks, the
service, bulk prediction) runs them.

Notable:
- Images arrive as uint8 [B, 3, S, S] after the eval resize and centre crop (`preprocess`); scaling and
  normalisation happen on the model's device.
- One autocast rule everywhere (`autocast`): bf16 on CUDA unless fp32 is asked for, nothing on a CPU
  unless a precision is named; features come back float32, L2-normalised.
- Zero-shot weights (`classifier`, `average_templates`) are built the way open_clip's
  `build_zero_shot_classifier` builds them: per class, the normalised mean of its normalised template
  embeddings (a test checks equality).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from linnaeus.clip.preprocess import normalise
from linnaeus.clip.templates import Template

TEXTS_PER_BATCH = 1024


def autocast(device: torch.device, precision: str = "auto", cache: bool = True):
    """The autocast context for `precision` (auto | bf16 | fp32 | fp8 | fp8-rowwise) on `device`: auto is
    bf16 on CUDA and fp32 elsewhere; the FP8 recipes run bf16 autocast around their float8 linears.
    `cache=False` for CUDA-graph capture (a cached cast would be freed after capture)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


@torch.no_grad()
def encode_pixels(model, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] (any device) -> features [B, D] on the CPU; runs where `mean` is."""
    x = normalise(pixels.to(mean.device, non_blocking=True), mean, std)
    with autocast(mean.device):
        features = model.encode_image(x)
    return F.normalize(features.float(), dim=-1).cpu()


@torch.no_grad()
def texts_on_device(model, tokenizer, texts: Sequence[str], device: torch.device,
                    texts_per_batch: int = TEXTS_PER_BATCH) -> torch.Tensor:
    """[N, D] normalised float32 text features on `device`, texts as given, a batch at a time."""
    device = torch.device(device)
    with autocast(device):
        return torch.cat([F.normalize(model.encode_text(tokenizer(list(texts[i:i + texts_per_batch])).to(device))
                                      .float(), dim=-1) for i in range(0, len(texts), texts_per_batch)])


def encode_texts(model, tokenizer, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Texts as given -> normalised float32 features [N, D] on the CPU."""
    return texts_on_device(model, tokenizer, texts, device).cpu()


def average_templates(encode: Callable[[list[str]], torch.Tensor], names: Sequence[str],
                      templates: Sequence[Template], texts_per_call: int = 1 << 18) -> torch.Tensor:
    """[D, C] weights from any text encoder (texts -> [N, D] normalised), at most `texts_per_call` texts
    per call (a call may be a whole Ray Data job: few and large is the aim)."""
    per_call = max(1, texts_per_call // len(templates))
    columns = []
    for start in range(0, len(names), per_call):
        chunk = names[start:start + per_call]
        embedded = encode([t(name) for name in chunk for t in templates])
        columns.append(F.normalize(embedded.reshape(len(chunk), len(templates), -1).mean(dim=1), dim=-1))
    return torch.cat(columns).T


def classifier(model, tokenizer, names: Sequence[str], templates: Sequence[Template],
               device: torch.device, texts_per_batch: int = TEXTS_PER_BATCH) -> torch.Tensor:
    """The [D, C] zero-shot weights of class `names` through `templates`, on `device`."""
    return average_templates(lambda texts: texts_on_device(model, tokenizer, texts, device, texts_per_batch),
                             names, templates, texts_per_batch)
