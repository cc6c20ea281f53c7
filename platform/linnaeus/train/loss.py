"""The CLIP contrastive loss across workers: open_clip's ClipLoss with features gathered with gradients.

Notable:
- `local_loss=True`: each worker scores only its own rows against every worker's columns (B x W*B
  logits instead of W*B x W*B), and `gather_with_grad=True` sends gradients back through the gather, so
  after data-parallel averaging the gradients equal one worker on the whole global batch
  (tests/ray/test_distributed_loss.py checks exactly that).
- Rank and world size are arguments; the caller (the Ray Train loop) reads them from its context.
"""

from __future__ import annotations

from open_clip.loss import ClipLoss


def clip_loss(rank: int = 0, world_size: int = 1) -> ClipLoss:
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank,
                    world_size=world_size)
