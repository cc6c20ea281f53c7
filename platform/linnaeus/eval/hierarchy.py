"""Do embeddings follow the tree of life? A number per rank, and a 2-D map.

Notable:
- For each image, the share of its k nearest neighbours (cosine, itself excluded) that share its taxon
  at each rank, averaged; the same with the labels shuffled is the chance level. A model whose
  embeddings follow the taxonomy scores well above chance at every rank, most at the coarse ranks.
- Neighbour search is quadratic, so it runs on a seeded sample of at most `hierarchy_images` images
  (20,000 by default), a chunk of queries at a time.
- The map is a 2-D PCA of the normalised features (deterministic, no extra dependency), coloured by
  one rank, written as a PNG.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from linnaeus.eval.ranks import rank_classes
from linnaeus.taxonomy import RANKS, Taxon


def sample(features: torch.Tensor, taxa: Sequence[Taxon], limit: int, seed: int = 0
           ) -> tuple[torch.Tensor, list[Taxon]]:
    """At most `limit` images, drawn by seed: neighbour search is quadratic in the images."""
    if len(taxa) <= limit:
        return features, list(taxa)
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(taxa), limit, replace=False)))
    return features[keep.to(features.device)], [taxa[i] for i in keep.tolist()]


def _neighbours(features: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    normed = F.normalize(features.float(), dim=-1)
    k = min(k, len(features) - 1)
    out = []
    for start in range(0, len(normed), chunk):
        sims = normed[start:start + chunk] @ normed.T
        rows = torch.arange(len(sims), device=sims.device)
        sims[rows, rows + start] = -float("inf")
        out.append(sims.topk(k, dim=1).indices.cpu())
    return torch.cat(out)


def knn_agreement(features: torch.Tensor, taxa: Sequence[Taxon], k: int = 10, seed: int = 0) -> dict[str, dict]:
    """Per rank: mean share of same-taxon neighbours, and the shuffled-label chance level."""
    neighbours = _neighbours(features, k)
    rng = np.random.default_rng(seed)
    out = {}
    for rank in RANKS:
        classes, labels = rank_classes(taxa, rank)
        known = labels >= 0
        if known.sum() < 2:
            continue
        shuffled = labels.clone()
        shuffled[known] = labels[known][torch.from_numpy(rng.permutation(int(known.sum())))]
        out[rank] = {"agreement": _agreement(labels, neighbours, known),
                     "chance": _agreement(shuffled, neighbours, known), "taxa": len(classes)}
    return out


def _agreement(labels: torch.Tensor, neighbours: torch.Tensor, known: torch.Tensor) -> float:
    same = (labels[neighbours] == labels[:, None]).float().mean(dim=1)
    return float(same[known].mean())


def pca_map_png(features: torch.Tensor, taxa: Sequence[Taxon], rank: str, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normed = F.normalize(features.float().cpu(), dim=-1)
    centred = normed - normed.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()
    names = [t.rank(rank) or "(unknown)" for t in taxa]
    fig, ax = plt.subplots(figsize=(7, 6))
    for name in sorted(set(names)):
        mask = np.array([n == name for n in names])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=8, label=name)
    if len(set(names)) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title(f"{title}: embeddings by {rank} (PCA)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
