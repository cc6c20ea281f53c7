"""The objective contract: what a training step asks of the part that turns batches into a loss.

Notable:
- An objective is an `nn.Module` built from its recipe fields (`Params`) and the distributed facts
  (rank, world size) as arguments, as open_clip's ClipLoss is: it never asks Ray for them.
- `views` asks the stream for extra augmented crops of every image (name, size, crop scale): they arrive
  in each batch as `view_<name>`, beside `image` and `text`, whatever the decode mode.
- Modules an objective owns (an EMA teacher, a frozen reference) are its submodules: `attach` builds
  them from the freshly built model, before a checkpoint is restored, and the checkpoint carries
  `objective.state_dict()` beside the model's, so a restarted or resumed run continues them exactly.
  They are not trained by the optimiser; what an objective trains belongs to the model.
- `backward` runs every micro-batch of one optimiser step forward and backward and returns the step's
  loss (and any other figures, as tensors: nothing waits for the device). The default averages the
  micro-batches' losses and reports the last micro-batch's other figures; an objective whose loss
  couples the images of a batch (contrastive) overrides it. `after_step` runs after the optimiser (an
  EMA update, a clamp).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Sequence

import torch
from pydantic import BaseModel
from torch import nn

from linnaeus.objectives.views import View
from linnaeus.registry import NoParams, Registry, params_model

Batch = dict[str, torch.Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def grad_sync(model: nn.Module, last: bool):
    """DDP all-reduces gradients on the last micro-batch only."""
    return contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()


class Objective(nn.Module):
    key: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.params = params if params is not None else params_model(type(self))()
        self.rank, self.world_size = rank, world_size

    @classmethod
    def views(cls, params: BaseModel) -> tuple[View, ...]:
        """Extra views of each image the stream must deliver (none by default)."""
        return ()

    def attach(self, model: nn.Module) -> None:
        """Build the objective's own modules from the (unwrapped, not yet compiled) model."""

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """{"loss": scalar, ...} for one micro-batch (the default `backward` averages them)."""
        raise NotImplementedError

    def backward(self, model: nn.Module, micro_batches: Sequence[Batch],
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, torch.Tensor]:
        total, out = None, {}
        for j, batch in enumerate(micro_batches):
            with grad_sync(model, j == len(micro_batches) - 1):
                with autocast():
                    out = self.loss(model, batch)
                    loss = out["loss"] / len(micro_batches)
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        return {**{k: v.detach() for k, v in out.items() if k != "loss"}, "loss": total}

    def after_step(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Runs after the optimiser step; returns figures to log (tensors)."""
        return {}


OBJECTIVES: Registry[Objective] = Registry("objective")


def make_objective(name: str, params: BaseModel | dict | None = None, rank: int = 0, world_size: int = 1,
                   field: str = "objective") -> Objective:
    cls = OBJECTIVES.get(name, field)
    if isinstance(params, dict):
        params = params_model(cls).model_validate(params)
    return cls(params, rank, world_size)
