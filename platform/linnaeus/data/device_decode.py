"""Decode and augment JPEG bytes on the trainer's device (nvJPEG on CUDA, libjpeg on CPU).

Notable:
- One batched `torchvision.io.decode_jpeg` call per batch: on CUDA that is nvJPEG; on CPU the same code
  runs (slowly), which is how CI tests this path without a GPU.
- A batch that fails to decode is retried image by image so that one corrupt JPEG costs only itself;
  the caller gets a keep-mask and drops the matching text rows.
- The augmentation matches open_clip's training transform: RandomResizedCrop with the crop scale and
  torchvision's default ratio (3/4, 4/3), bicubic resize, CLIP mean/std.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def _decode(jpegs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    if not jpegs:
        return []
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for one in data:
            try:
                out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def crop_params(height: int, width: int, scale: tuple[float, float],
                generator: torch.Generator | None = None,
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from `generator` (top, left, h, w)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1],
                                                    generator=generator)).item()
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback to a central crop at the nearest allowed ratio, as torchvision does.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def decode_and_augment(jpegs: Sequence[bytes], image_size: int, crop_scale: tuple[float, float],
                       device: torch.device | str, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG bytes -> (images [N_ok, 3, S, S] float32 normalised, keep mask [len(jpegs)] bool)."""
    device = torch.device(device)
    decoded = _decode(jpegs, device)
    keep = torch.tensor([d is not None for d in decoded], dtype=torch.bool)
    crops = []
    for image in (d for d in decoded if d is not None):
        top, left, h, w = crop_params(image.shape[-2], image.shape[-1], crop_scale, generator)
        patch = image[:, top:top + h, left:left + w].unsqueeze(0).float()
        crops.append(F.interpolate(patch, size=(image_size, image_size), mode="bicubic",
                                   align_corners=False, antialias=True).clamp_(0, 255)[0])
    if not crops:
        return torch.zeros((0, 3, image_size, image_size), device=device), keep
    return normalise(torch.stack(crops)), keep


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] pixels in 0..255 (uint8 or float) -> float32 with CLIP's mean/std, on their device."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std
