"""The consumer end of the stream: a Ray Data iterator -> dicts of torch tensors on a device.

Notable:
- `decode="cpu"` streams augmented uint8 pixels through `iter_torch_batches` and normalises them on
  `device` (CLIP mean/std), so the object store carries a quarter of the bytes of float32;
  `decode="gpu"` streams JPEG bytes through `iter_batches` and decodes them on `device` (nvJPEG),
  dropping the text rows of any image
  that fails to decode so image i and text i always stay a pair. That work runs in a background
  thread on a side CUDA stream (`prefetch.Prefetcher`), `prefetch_batches` ahead of the trainer.
- `decode="hybrid"` streams decoded uint8 images of any size (as bytes) and crops them on `device` with
  the GPU path's augmentation, in the same background thread; nothing is dropped there.
- Extra views (`view_<name>`, asked for by the objective) are normalised like the image on the CPU path
  and cropped from the same decoded image on the device on the GPU and hybrid paths.
- With `cut_text` the token ids are cut after the batch's longest caption on the host, before they
  reach the device (`fastclip.cut_tokens`): finding the length there would make the host wait for
  the GPU. The model must take cut text (its text tower says so; the training recipe checks).
- This is what a Ray Train worker calls on `ray.train.get_dataset_shard(...)`; it does not itself touch
  `ray.train`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from linnaeus.clip.fastclip import cut_tokens
from linnaeus.clip.preprocess import to_device
from linnaeus.clip.text_towers import make_tower
from linnaeus.config import StreamConfig
from linnaeus.data.device_decode import augment, decode, normalise, upload_pixels
from linnaeus.data.prefetch import Prefetcher


def iter_train_batches(iterator, cfg: StreamConfig, batch_size: int, device: str | torch.device = "cpu",
                       drop_last: bool = True, prefetch_batches: int = 2
                       ) -> Iterator[dict[str, torch.Tensor]]:
    """Batches {image [B,3,S,S] float32, view_<name> (if any), text [B,L] int64, sample_key, epoch,
    position [B]} on `device`.
    Either way the iterator has `close()`; call it when stopping early (it stops the prefetch thread)."""
    if cfg.decode == "cpu":
        return _cpu_batches(iterator, cfg, batch_size, device, drop_last, prefetch_batches)
    batches = _gpu_batches if cfg.decode == "gpu" else _hybrid_batches
    return Prefetcher(lambda: batches(iterator, cfg, batch_size, device, drop_last, prefetch_batches),
                      device, depth=prefetch_batches)


class _CutText(NumpyBatchCollateFn):
    """numpy columns -> tensors with the text cut (Ray then moves them to the device, in its thread)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(cut_tokens(v) if k == "text" else v))
                for k, v in batch.items()}


def _cpu_batches(iterator, cfg: StreamConfig, batch_size: int, device, drop_last: bool, prefetch_batches: int):
    for batch in iterator.iter_torch_batches(batch_size=batch_size, device=device, drop_last=drop_last,
                                             prefetch_batches=prefetch_batches,
                                             collate_fn=_CutText() if cfg.cut_text else None):
        yield {**batch, **{k: normalise(v) for k, v in batch.items() if k == "image" or k.startswith("view_")}}


def _gpu_batches(iterator, cfg: StreamConfig, batch_size: int, device, drop_last: bool, prefetch_batches: int):
    generator = torch.Generator().manual_seed(cfg.seed)
    for batch in iterator.iter_batches(batch_size=batch_size, batch_format="numpy",
                                       drop_last=drop_last, prefetch_batches=prefetch_batches):
        images, keep = decode(list(batch["image"]), torch.device(device))
        yield {**_crops(images, cfg, device, generator), **_columns(batch, cfg, device, keep.numpy())}


def _hybrid_batches(iterator, cfg: StreamConfig, batch_size: int, device, drop_last: bool,
                    prefetch_batches: int):
    generator = torch.Generator().manual_seed(cfg.seed)
    for batch in iterator.iter_batches(batch_size=batch_size, batch_format="numpy",
                                       drop_last=drop_last, prefetch_batches=prefetch_batches):
        images = upload_pixels(batch["image"], batch["height"], batch["width"], device)
        yield {**_crops(images, cfg, device, generator), **_columns(batch, cfg, device)}


def _crops(images: list[torch.Tensor], cfg: StreamConfig, device, generator: torch.Generator) -> dict:
    """The image's random resized crop and each extra view's, on `device`."""
    device = torch.device(device)
    out = {"image": augment(images, cfg.image_size, tuple(cfg.crop_scale), device, generator)}
    for view in cfg.views:
        out[f"view_{view.name}"] = augment(images, view.size, tuple(view.scale), device, generator)
    return out


def _columns(batch: dict[str, np.ndarray], cfg: StreamConfig, device, mask: np.ndarray | None = None) -> dict:
    """The text and bookkeeping columns on `device` (rows in `mask` only; text cut if asked)."""
    out = {}
    for key in ("text", "sample_key", "epoch", "position"):
        column = batch[key] if mask is None else batch[key][mask]
        if key == "text" and cfg.cut_text:
            column = cut_tokens(column)
        out[key] = to_device(column, torch.device(device))
    return out


def decode_tokens(cfg: StreamConfig, tokens: torch.Tensor) -> str:
    """Token ids back to text (as the BPE sees it: lower case), without start/end markers; a tokenizer
    that cannot decode shows the ids."""
    tokenize = make_tower(cfg.text_tower.name, cfg.text_tower.params).tokenizer(cfg.model, cfg.context_length)
    ids = [t for t in tokens.tolist() if t]
    if not hasattr(tokenize, "decode"):
        return " ".join(map(str, ids))
    return tokenize.decode(ids).replace("<start_of_text>", "").replace("<end_of_text>", "").strip()


def preview(iterator, cfg: StreamConfig, batches: int, batch_size: int) -> Iterator[str]:
    """Lines describing the first `batches` batches: tensor shapes and the decoded captions."""
    with contextlib.closing(iter_train_batches(iterator, cfg, batch_size, drop_last=False)) as stream:
        yield from _describe(stream, cfg, batches)


def _describe(stream, cfg: StreamConfig, batches: int) -> Iterator[str]:
    for index, batch in enumerate(stream):
        if index >= batches:
            return
        yield (f"batch {index}: image {tuple(batch['image'].shape)} {batch['image'].dtype}, "
               f"text {tuple(batch['text'].shape)} {batch['text'].dtype}")
        yield from (f"  {decode_tokens(cfg, tokens)}" for tokens in batch["text"])
