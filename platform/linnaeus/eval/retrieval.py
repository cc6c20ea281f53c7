"""Image-text retrieval recall@k over an evaluation set whose images carry captions.

Notable:
- Taxonomic captions repeat (every image of a species has the same text), so texts are deduplicated:
  image -> text ranks the distinct captions and hits when the image's own caption is in the top k;
  text -> image ranks the images and hits when any of the top k carries that caption.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, image_to_text: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """`image_to_text[i]` is the index (into the distinct texts) of image i's caption."""
    sims = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    out = {}
    for k in ks:
        top_texts = sims.topk(min(k, sims.shape[1]), dim=1).indices
        out[f"image_to_text_r{k}"] = float((top_texts == image_to_text[:, None]).any(dim=1).float().mean())
        top_images = sims.T.topk(min(k, sims.shape[0]), dim=1).indices
        hits = (image_to_text[top_images] == torch.arange(sims.shape[1])[:, None]).any(dim=1)
        out[f"text_to_image_r{k}"] = float(hits.float().mean())
    return out
