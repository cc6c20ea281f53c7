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

from linnaeus.eval import search


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, image_to_text: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10), chunk: int = 8192, budget: int = search.BUDGET,
                device: torch.device | str = "cpu") -> dict[str, float]:
    """`image_to_text[i]` is the index (into the distinct texts) of image i's caption. The similarity
    search runs on `device`, a bounded block at a time (`search.top_k`)."""
    images = F.normalize(image_features.float().to(device), dim=-1)
    texts = F.normalize(text_features.float().to(device), dim=-1)
    kmax = max(ks)
    top_texts = search.top_k(images, texts, kmax, chunk, budget)
    top_images = search.top_k(texts, images, kmax, chunk, budget)
    out = {}
    for k in ks:
        out[f"image_to_text_r{k}"] = float((top_texts[:, :k] == image_to_text[:, None]).any(dim=1).float().mean())
        hits = (image_to_text[top_images[:, :k]] == torch.arange(len(texts))[:, None]).any(dim=1)
        out[f"text_to_image_r{k}"] = float(hits.float().mean())
    return out
