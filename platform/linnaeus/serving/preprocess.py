"""The model's eval resize + centre crop on the CPU, ending at uint8 pixels; the rest on the device.

open_clip's eval transform is Resize -> CenterCrop -> to-tensor -> Normalize. Cutting it before the
tensor conversion gives uint8 [3, S, S] (150 KB at 224 px instead of 600 KB of floats) that can travel
between processes; `normalise` finishes the job on the model's device. Built from a `preprocess_cfg`
alone, so a front end that never loads the model can crop exactly as the model expects. Profiled in
the ingress on the H100 host, resize is ~40% of its CPU and the JPEG decode ~16%: no step here copies
an image it does not have to.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def crop_transform(preprocess_cfg: dict):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision.transforms import Compose, Resize

    full = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    if not isinstance(full.transforms[0], Resize):
        raise ValueError(f"unexpected eval transform for this model: {full}")
    keep = [s for s in full.transforms if type(s).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    return Compose([_ConvertMode(s.mode) if type(s).__name__ == "MaybeConvertMode" else s for s in keep])


class _ConvertMode:
    """open_clip's MaybeConvertMode without its copy of an image already in the mode (PIL's convert copies)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode})"


def eval_pixels(image: Image.Image, crop) -> np.ndarray:
    """RGB image -> uint8 [3, S, S] (numpy: the form that crosses processes cheaply)."""
    return np.ascontiguousarray(np.asarray(crop(image), dtype=np.uint8).transpose(2, 0, 1))


def to_pixels(image: Image.Image, crop) -> torch.Tensor:
    """RGB image -> uint8 [3, S, S] tensor."""
    return torch.from_numpy(eval_pixels(image, crop))


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] on any device -> float [B, 3, S, S] as open_clip's Normalize leaves it."""
    return pixels.float().div_(255).sub_(mean).div_(std)
