"""Training objectives as a registry: what a training step computes from the model and a batch, in plain
torch. `base` holds the contract and the registry, `clip` the gathered contrastive loss (the default),
`views` the extra image views an objective may ask the stream for.

The registry and the objectives (torch) load on first use of these names, so configs can import `View`
without importing torch; whoever reaches the registry through this package gets the built-in ones.
"""

from linnaeus.objectives.views import View, check_crop_scale

_TORCH_NAMES = {"OBJECTIVES", "Objective", "make_objective", "unwrap"}
__all__ = ["View", "check_crop_scale", *sorted(_TORCH_NAMES)]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from linnaeus.objectives import base, clip  # noqa: F401  (clip registers the built-in objective)

        return getattr(base, name)
    raise AttributeError(f"module 'linnaeus.objectives' has no attribute {name!r}")
