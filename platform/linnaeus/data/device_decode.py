"""Decode and augment JPEG bytes on the trainer's device (nvJPEG on CUDA, libjpeg on CPU), or augment
images decoded upstream (`decode="hybrid"`).

Notable:
- One batched `torchvision.io.decode_jpeg` call per batch: on CUDA that is nvJPEG; on CPU the same code
  runs (slowly), which is how CI tests this path without a GPU.
- A batch that fails to decode is retried image by image so that one corrupt JPEG costs only itself;
  the caller gets a keep-mask and drops the matching text rows.
- Pixels decoded upstream (`upload_pixels`) reach the device in one copy through pinned memory, and
  each image is a view into it; the small arrays (crop boxes, token ids) go through pinned memory too,
  so the hybrid path never makes the host wait for the device. nvJPEG's call, by contrast, waits
  for its own kernels, which share the GPU with the training step: under a compiled ViT-B/16 step on
  an H100 one 512-image batch took ~165 ms in it (vs 18 ms on an idle GPU), as long as the step itself.
- The augmentation is open_clip's training transform, batched: RandomResizedCrop's rule with the crop
  scale and torchvision's default ratio (3/4, 4/3), drawn for the whole batch at once (`crop_boxes`),
  then every crop resized by one `roi_align` per group of similar sizes (`resized_crops`), CLIP
  mean/std. The resize is bilinear with box-filter antialiasing rather than open_clip's bicubic: a
  bicubic resize per image costs several kernel launches and tiny tensor operations each, Python work
  that competes with the training step for the interpreter (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align

from linnaeus.clip import preprocess

MAX_PADDED_ELEMENTS = 2**27  # one resize batch: 512 MiB of float32


def _decode(jpegs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    if not jpegs:
        return []
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    if device.type == "cuda":
        # torchvision's nvJPEG decoder writes on a stream of its own that does not wait for ours: let
        # the kernels still queued on ours (the previous batch's crops) finish before it reuses memory.
        torch.cuda.current_stream(device).synchronize()
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


def crop_boxes(sizes: Sequence[tuple[int, int]], scale: tuple[float, float],
               generator: torch.Generator | None = None, ratio: tuple[float, float] = (3 / 4, 4 / 3),
               attempts: int = 10) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for a whole batch at once: [N, 4] (top, left, h, w).

    The same rule (up to `attempts` draws of area and aspect, the first that fits wins, else a central
    crop at the nearest allowed ratio), with every draw for the batch taken in three generator calls
    instead of a dozen tiny tensor operations per image."""
    n = len(sizes)
    hw = np.asarray(sizes, dtype=np.float64).reshape(n, 2)
    height, width = hw[:, :1], hw[:, 1:]
    area = (height * width)
    target = area * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale, generator=generator).numpy()
    log_r = np.log(ratio)
    aspect = np.exp(torch.empty(n, attempts, dtype=torch.float64).uniform_(log_r[0], log_r[1],
                                                                            generator=generator).numpy())
    position = torch.rand(n, 2, dtype=torch.float64, generator=generator).numpy()
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    ok = fits[rows, first]
    h, w = h[rows, first], w[rows, first]
    height, width = height[:, 0], width[:, 0]
    # Fallback: a central crop at the nearest allowed ratio, as torchvision does.
    in_ratio = width / height
    fb_w = np.where(in_ratio < ratio[0], width, np.where(in_ratio > ratio[1], np.round(height * ratio[1]), width))
    fb_h = np.where(in_ratio < ratio[0], np.round(width / ratio[0]), height)
    h, w = np.where(ok, h, fb_h), np.where(ok, w, fb_w)
    top = np.where(ok, np.floor(position[:, 0] * (height - h + 1)), (height - h) // 2)
    left = np.where(ok, np.floor(position[:, 1] * (width - w + 1)), (width - w) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.int64)


def resized_crops(images: list[torch.Tensor], boxes: np.ndarray, size: int,
                  max_padded: int = MAX_PADDED_ELEMENTS) -> torch.Tensor:
    """Crop boxes[i] out of images[i] ([3,H,W] uint8) and resize each to size x size: [N,3,S,S] float
    in 0..255. Images of a similar size are padded into one batch and cut by one `roi_align`, whose
    adaptive sampling averages ceil(crop / size) points per output pixel and axis (a box filter against
    aliasing); batches stay under `max_padded` elements, so one huge photo cannot blow up the rest."""
    device = images[0].device
    out = torch.empty((len(images), 3, size, size), device=device)
    order = sorted(range(len(images)), key=lambda i: images[i].shape[-2] * images[i].shape[-1])
    for chunk in _chunks(order, images, max_padded):
        hmax = max(images[i].shape[-2] for i in chunk)
        wmax = max(images[i].shape[-1] for i in chunk)
        padded = torch.zeros((len(chunk), 3, hmax, wmax), device=device)
        for j, i in enumerate(chunk):
            h, w = images[i].shape[-2:]
            padded[j, :, :h, :w].copy_(images[i])
            # roi_align's last samples reach up to half a pixel past a crop that ends at the image's
            # edge: repeat the edge there, as an unpadded image would (zeros would darken the border).
            if w < wmax:
                padded[j, :, :h, w].copy_(images[i][:, :, -1])
            if h < hmax:
                padded[j, :, h, :w + (w < wmax)].copy_(padded[j, :, h - 1, :w + (w < wmax)])
        top, left, h, w = (boxes[chunk].T).astype(np.float32)
        rois = np.stack([np.arange(len(chunk), dtype=np.float32), left, top, left + w, top + h], axis=1)
        crops = roi_align(padded, preprocess.to_device(rois, device), output_size=size, spatial_scale=1.0,
                          sampling_ratio=-1, aligned=True)
        out[preprocess.to_device(np.asarray(chunk), device)] = crops
    return out


def _chunks(order: list[int], images: list[torch.Tensor], max_padded: int):
    chunk: list[int] = []
    hmax = wmax = 0
    for i in order:
        h, w = images[i].shape[-2:]
        nh, nw = max(hmax, h), max(wmax, w)
        if chunk and (len(chunk) + 1) * 3 * nh * nw > max_padded:
            yield chunk
            chunk, nh, nw = [], h, w
        chunk.append(i)
        hmax, wmax = nh, nw
    if chunk:
        yield chunk


def decode(jpegs: Sequence[bytes], device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """JPEG bytes -> ([3,H,W] uint8 images on `device` that decoded, keep mask [len(jpegs)] bool)."""
    decoded = _decode(jpegs, device)
    keep = torch.tensor([d is not None for d in decoded], dtype=torch.bool)
    return [d for d in decoded if d is not None], keep


def decode_and_augment(jpegs: Sequence[bytes], image_size: int, crop_scale: tuple[float, float],
                       device: torch.device | str, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG bytes -> (images [N_ok, 3, S, S] float32 normalised, keep mask [len(jpegs)] bool)."""
    device = torch.device(device)
    images, keep = decode(jpegs, device)
    return augment(images, image_size, crop_scale, device, generator), keep


def augment(images: list[torch.Tensor], image_size: int, crop_scale: tuple[float, float],
            device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """[3,H,W] uint8 images on `device` -> random resized crops [N, 3, S, S], float32 normalised."""
    if not images:
        return torch.zeros((0, 3, image_size, image_size), device=device)
    boxes = crop_boxes([tuple(image.shape[-2:]) for image in images], crop_scale, generator)
    return normalise(resized_crops(images, boxes, image_size))


def upload_pixels(pixels: Sequence[bytes], heights: Sequence[int], widths: Sequence[int],
                  device: torch.device | str) -> list[torch.Tensor]:
    """Decoded images as uint8 HWC bytes -> [3,H,W] uint8 views on `device`, all sent in one copy."""
    device = torch.device(device)
    sizes = [len(p) for p in pixels]
    for i, (n, h, w) in enumerate(zip(sizes, heights, widths)):
        if n != int(h) * int(w) * 3:
            raise ValueError(f"image {i}: {n} bytes is not {h} x {w} x 3 RGB pixels")
    host = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=device.type == "cuda")
    flat, offset = host.numpy(), 0
    for p, n in zip(pixels, sizes):
        flat[offset:offset + n] = np.frombuffer(p, dtype=np.uint8)
        offset += n
    on_device = host.to(device, non_blocking=True)
    views, offset = [], 0
    for n, h, w in zip(sizes, heights, widths):
        views.append(on_device[offset:offset + n].view(int(h), int(w), 3).permute(2, 0, 1))
        offset += n
    return views


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] pixels in 0..255 (uint8, or float normalised in place) -> float32 with CLIP's mean/std,
    on their device (`linnaeus.clip.preprocess`)."""
    return preprocess.normalise(pixels, *preprocess.clip_stats(pixels.device))
