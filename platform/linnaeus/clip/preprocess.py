"""Image preprocessing for a model, split where it is cheapest to ship: the PIL work on the CPU ends at
uint8 pixels, and the float work (scale + normalise) runs on the model's device.

Notable:
- Evaluation, serving and bulk prediction use open_clip's eval transform (Resize -> CenterCrop ->
  to-tensor -> Normalize) cut before the tensor conversion (`eval_crop`): uint8 [3, S, S] (150 KB at
  224 px instead of 600 KB of floats) travels between processes, and `normalise` finishes the job on
  the device. Built from a `preprocess_cfg` alone, so a front end that never loads the model crops
  exactly as the model expects. Profiled in the ingress on the H100 host, resize is ~40% of its CPU and
  the JPEG decode ~16%: no step here copies an image it does not have to.
- Training's CPU path (`train_crop`) is the PIL half of open_clip's own training transform
  (RandomResizedCrop, bicubic); its float half is `normalise` with CLIP's mean and std on the trainer.
- Small host arrays reach a CUDA device through pinned memory (`to_device`), so the host never waits
  for the kernels already queued on the stream (a copy from pageable memory would).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image


# --- evaluation and serving ----------------------------------------------------------------------
def eval_crop(preprocess_cfg: dict):
    """open_clip's eval transform for `preprocess_cfg`, up to (not including) the tensor conversion."""
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
    """RGB image -> uint8 [3, S, S] through `crop` (numpy: the form that crosses processes cheaply)."""
    return _chw(crop(image))


def to_pixels(image: Image.Image, crop) -> torch.Tensor:
    """RGB image -> uint8 [3, S, S] tensor."""
    return torch.from_numpy(eval_pixels(image, crop))


# --- training --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def train_transform(image_size: int, crop_scale: tuple[float, float]):
    """open_clip's own training transform: RandomResizedCrop(bicubic) + to-tensor + CLIP normalise."""
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=True, aug_cfg={"scale": crop_scale})


@functools.lru_cache(maxsize=8)
def train_crop(image_size: int, crop_scale: tuple[float, float]):
    """The PIL half of `train_transform` (crop + mode): its output stays 8-bit, and the float half
    (`normalise` with `clip_stats`) runs on the trainer. Pixels travel through Ray's object store as
    uint8, a quarter of the bytes of float32."""
    from torchvision.transforms import Compose

    return Compose(train_transform(image_size, crop_scale).transforms[:-2])


def train_pixels(image: Image.Image, image_size: int, crop_scale: tuple[float, float]) -> np.ndarray:
    """RGB image -> a random resized crop as uint8 [3, S, S] (torch's global RNG draws the crop)."""
    return _chw(train_crop(image_size, tuple(crop_scale))(image))


def _chw(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


# --- on the device ---------------------------------------------------------------------------------
def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] in 0..255 on any device -> float as open_clip's Normalize leaves it. A uint8 input is
    converted (a new tensor); a float input is normalised in place (the callers' crops are their own)."""
    return pixels.float().div_(255).sub_(mean).div_(std)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on `device`; on CUDA through pinned memory, so the host does not wait for the
    stream's earlier kernels (a copy from pageable memory would)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@functools.lru_cache(maxsize=None)
def clip_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std (what open_clip's training transform normalises with) as [1,3,1,1] on
    `device`, sent there once (every training batch needs them)."""
    return tuple(to_device(np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1), device)
                 for v in (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD))


def norm_stats(preprocess_cfg: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's own normalisation mean and std (`model.visual.preprocess_cfg`) as [1,3,1,1] on `device`."""
    return tuple(torch.tensor(preprocess_cfg[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
