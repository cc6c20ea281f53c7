"""The CLIP contrastive objective across workers: open_clip's ClipLoss with features gathered with
gradients, accumulation that keeps the contrastive batch whole, and the logit-scale clamp.

Notable:
- `local_loss=True`: each worker scores only its own rows against every worker's columns (B x W*B
  logits instead of W*B x W*B), and `gather_with_grad=True` sends gradients back through the gather, so
  after data-parallel averaging the gradients equal one worker on the whole global batch
  (tests/ray/test_distributed_loss.py checks exactly that).
- Accumulation keeps the contrastive batch whole, as open_clip's `--accum-freq` does: the features of
  every micro-batch are computed once without gradients, then each micro-batch is run again with
  gradients and its features are scored against the cached features of all the others. The loss sees
  the full global batch of negatives, and the summed gradients equal those of one pass over it
  (tests/unit/test_step.py checks that), for one extra forward per micro-batch. The logit scale takes
  its gradient from one pass only, the last (open_clip's loop counts it once per micro-batch); under
  DDP it must be the last: the synchronised pass is where DDP expects every parameter's gradient.
- After each step the logit scale is clamped to ln(100), as CLIP does.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from open_clip.loss import ClipLoss

from linnaeus.objectives.base import OBJECTIVES, Batch, Objective, grad_sync, unwrap

MAX_LOGIT_SCALE = math.log(100)


def clip_loss(rank: int = 0, world_size: int = 1) -> ClipLoss:
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank,
                    world_size=world_size)


@OBJECTIVES.register("clip")
class ClipObjective(Objective):
    """Image-text contrastive learning on (image, text) pairs: BioCLIP's objective."""

    def __init__(self, params=None, rank: int = 0, world_size: int = 1):
        super().__init__(params, rank, world_size)
        self.contrastive = clip_loss(rank, world_size)

    def loss(self, model, batch: Batch) -> dict[str, torch.Tensor]:
        image_features, text_features, logit_scale = model(batch["image"], batch["text"])
        return {"loss": self.contrastive(image_features, text_features, logit_scale)}

    def backward(self, model, micro_batches: Sequence[Batch], autocast) -> dict[str, torch.Tensor]:
        if len(micro_batches) == 1:
            with autocast():
                loss = self.loss(model, micro_batches[0])["loss"]
            loss.backward()
            return {"loss": loss.detach()}
        cached_images, cached_texts = [], []
        with torch.no_grad(), autocast():
            for batch in micro_batches:
                image_features, text_features, _ = model(batch["image"], batch["text"])
                cached_images.append(image_features)
                cached_texts.append(text_features)
        loss = None
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            with grad_sync(model, last):
                with autocast():
                    image_features, text_features, logit_scale = model(batch["image"], batch["text"])
                    if not last:  # every pass scores the whole batch: the temperature's gradient is
                        logit_scale = logit_scale.detach()  # taken once, in the pass DDP syncs
                    images = torch.cat(cached_images[:j] + [image_features] + cached_images[j + 1:])
                    texts = torch.cat(cached_texts[:j] + [text_features] + cached_texts[j + 1:])
                    loss = self.contrastive(images, texts, logit_scale)
                loss.backward()
        return {"loss": loss.detach()}

    def after_step(self, model) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            scale = unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return {"logit_scale": scale.detach().exp()}
