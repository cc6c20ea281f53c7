"""Accuracy at every taxonomic rank, two ways.

Notable:
- `via_species`: classify among the species (leaf taxa), then score the predicted taxon's lineage at
  each rank: right genus, wrong species counts at genus and above.
- `direct`: classify among the distinct lineages truncated at that rank, named by their taxonomic name
  ("Animalia Chordata Aves" at class). Scientific and common names do not exist above genus, so direct
  rank classification always uses the taxonomic text type.
- Images whose own lineage is unknown at a rank are left out of that rank's figure (the count is kept).
- A class at species is the whole taxon, common name included (`Taxon.truncated`): zero-shot names its
  classes in the asked text type, `taxonomic_common` included.
"""

from __future__ import annotations

from typing import Sequence

import torch

from linnaeus.taxonomy import RANKS, Taxon


def via_species(predicted: Sequence[Taxon], truth: Sequence[Taxon]) -> dict[str, dict]:
    """Per rank: accuracy of the predicted leaf taxon's lineage, and how many images count."""
    out = {}
    for depth, rank in enumerate(RANKS, start=1):
        pairs = [(p.lineage[:depth], t.lineage[:depth]) for p, t in zip(predicted, truth)
                 if t.lineage[depth - 1] is not None]
        if pairs:
            out[rank] = {"top1": sum(p == t for p, t in pairs) / len(pairs), "images": len(pairs)}
    return out


def rank_classes(truth: Sequence[Taxon], rank: str) -> tuple[list[Taxon], torch.Tensor]:
    """Distinct lineages at `rank` and each image's index among them (-1 when unknown at that rank)."""
    cut = [t.truncated(rank) for t in truth]
    classes = sorted({c for c in cut if c is not None}, key=lambda c: c.key)
    index = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([index[c] if c is not None else -1 for c in cut], dtype=torch.long)
