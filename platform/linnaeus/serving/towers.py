"""An open_clip model's two towers on its device: the one way serving and evaluation run them.

Notable:
- Images arrive as uint8 [B, 3, S, S] after the eval resize and centre crop (`preprocess`); scaling and
  normalisation happen on the model's device.
- On CUDA both towers run under bf16 autocast; features come back float32, L2-normalised, on the CPU.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from linnaeus.eval import zeroshot
from linnaeus.serving.preprocess import normalise


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def norm_stats(model, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's normalisation mean and std as [1, 3, 1, 1] tensors on `device`."""
    cfg = model.visual.preprocess_cfg
    return tuple(torch.tensor(cfg[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))


@torch.no_grad()
def encode_pixels(model, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] (any device) -> features [B, D] on the CPU; runs where `mean` is."""
    x = normalise(pixels.to(mean.device, non_blocking=True), mean, std)
    with autocast(mean.device):
        features = model.encode_image(x)
    return F.normalize(features.float(), dim=-1).cpu()


def encode_texts(model, tokenizer, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Texts as given -> features [N, D] on the CPU (a batch of 1,024 at a time)."""
    with autocast(device):
        return zeroshot.encode_texts(model, tokenizer, list(texts), device).cpu()
