"""Zero-shot scoring: the best classes of each image against class weights, and top-k accuracy.

The class weights themselves come from the model floor (`linnaeus.clip.towers.average_templates`, the
CLIP procedure: templates averaged per class) and the class names from the text source
(`linnaeus.text.taxonomic.class_names`: the training caption of the class in the chosen text type).
"""

from __future__ import annotations

from typing import Sequence

import torch

from linnaeus.eval import search


def top_classes(features: torch.Tensor, weights: torch.Tensor, k: int = 5, chunk: int = 16384) -> torch.Tensor:
    """[N, k] best classes per image (`weights` is [D, classes]), a bounded block of images at a time."""
    return search.top_k(features, weights.T, k, chunk)


def accuracy_from_top(top: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    return {f"top{k}": float((top[:, :k] == labels[:, None]).any(dim=1).float().mean()) for k in ks}
