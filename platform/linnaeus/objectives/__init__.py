"""Training objectives as a registry: what a training step computes from the model and a batch, in plain
torch. `base` holds the contract and the registry; `clip` the gathered contrastive loss (the default)."""

from linnaeus.objectives import clip  # noqa: F401  (registers the built-in objective)
from linnaeus.objectives.base import OBJECTIVES, Objective, View, make_objective, unwrap

__all__ = ["OBJECTIVES", "Objective", "View", "make_objective", "unwrap"]
