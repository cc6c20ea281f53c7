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
    """Support (k per class) and query (the rest) indices, for classes with more than k images. One
    sort by (label, random key) gives every class a random order at once: O(N log N), where a pass per
    class was O(N x classes) (hours for a million images of 10,000 species)."""
    order = np.lexsort((rng.random(len(labels)), labels))
    sorted_labels = labels[order]
    _, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    within = np.arange(len(labels)) - np.repeat(starts, counts)  # position inside its class
    usable = np.repeat(counts > k, counts)
    return order[usable & (within < k)], order[usable & (within >= k)]


def simpleshot_once(features: torch.Tensor, labels: torch.Tensor, k: int, seed: int,
                    chunk: int = 16384) -> float:
    """Top-1 accuracy of one SimpleShot draw (queries scored a chunk at a time, on the features' device)."""
    device = features.device
    support, query = _split(labels.cpu().numpy(), k, np.random.default_rng(seed))
    support_t, query_t = torch.from_numpy(support).to(device), torch.from_numpy(query).to(device)
    labels = labels.to(device)
    mean = features[support_t].mean(dim=0, keepdim=True)
    classes, slot = labels[support_t].unique(return_inverse=True)
    normed_support = F.normalize(features[support_t] - mean, dim=-1)
    centroids = torch.zeros(len(classes), features.shape[1], device=device).index_add_(0, slot, normed_support) / k
    correct = 0
    for start in range(0, len(query_t), chunk):
        rows = query_t[start:start + chunk]
        queries = F.normalize(features[rows] - mean, dim=-1)
        predicted = classes[torch.cdist(queries, centroids).argmin(dim=1)]
        correct += int((predicted == labels[rows]).sum())
    return correct / len(query_t)


def simpleshot(features: torch.Tensor, labels: torch.Tensor, k: int, seeds: int = 5) -> dict:
    """Mean and standard deviation of SimpleShot top-1 over `seeds` draws of k shots per class."""
    counts = torch.bincount(labels)
    usable = int((counts > k).sum())
    if usable < 2:
        raise ValueError(f"{k}-shot needs at least two classes with more than {k} images; {usable} have")
    features = features.float()  # once, not per seed
    runs = [simpleshot_once(features, labels, k, seed) for seed in range(seeds)]
    return {"k": k, "mean": float(np.mean(runs)), "std": float(np.std(runs)), "per_seed": runs,
            "classes": usable, "classes_left_out": int((counts > 0).sum()) - usable}
