"""Few-shot classification with SimpleShot (Wang et al. 2019), as BioCLIP reports it.

Notable:
- Per seed: draw k support images per class, the rest of the class is the query set (never both).
  Features are centred on the mean of the support features and L2-normalised ("CL2N"); each class's
  centroid is the mean of its support; a query takes the nearest centroid (Euclidean).
- Classes with fewer than k + 1 images cannot give both support and query and are left out (counted).
- Seeds 0..n-1 by default: the same seeds give the same draws on any machine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _split(labels: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    support, query = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) > k:
            support.append(members[:k])
            query.append(members[k:])
    return np.concatenate(support), np.concatenate(query)


def simpleshot_once(features: torch.Tensor, labels: torch.Tensor, k: int, seed: int) -> float:
    """Top-1 accuracy of one SimpleShot draw."""
    support, query = _split(labels.numpy(), k, np.random.default_rng(seed))
    mean = features[support].mean(dim=0, keepdim=True)
    normed = F.normalize(features - mean, dim=-1)
    classes = labels[support].unique()
    centroids = torch.stack([normed[support][labels[support] == c].mean(dim=0) for c in classes])
    predicted = classes[torch.cdist(normed[query], centroids).argmin(dim=1)]
    return float((predicted == labels[query]).float().mean())


def simpleshot(features: torch.Tensor, labels: torch.Tensor, k: int, seeds: int = 5) -> dict:
    """Mean and standard deviation of SimpleShot top-1 over `seeds` draws of k shots per class."""
    counts = torch.bincount(labels)
    usable = int((counts > k).sum())
    if usable < 2:
        raise ValueError(f"{k}-shot needs at least two classes with more than {k} images; {usable} have")
    runs = [simpleshot_once(features.float(), labels, k, seed) for seed in range(seeds)]
    return {"k": k, "mean": float(np.mean(runs)), "std": float(np.std(runs)), "per_seed": runs,
            "classes": usable, "classes_left_out": int((counts > 0).sum()) - usable}
