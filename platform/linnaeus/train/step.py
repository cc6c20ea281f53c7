"""One optimiser step: the recipe's objective forward and backward over the micro-batches, gradient
clipping, the optimiser and the schedule (plain torch).

Notable:
- What the step computes is the objective's (`linnaeus.objectives`): it runs the micro-batches forward
  and backward (the contrastive objective keeps its batch whole across them) and may act after the
  optimiser (the CLIP temperature clamp, an EMA update).
- bf16 autocast on GPU, fp32 on CPU by default (`linnaeus.clip.towers.autocast`).
- No host-device synchronisation: the step only queues GPU work, and `StepResult` turns its tensors
  into numbers when (and only when) someone reads them, so the trainer prepares the next batch while
  the GPU still runs this step. Reading a result every step would serialise the two again.
- Text lengths may differ from batch to batch (cut text, `linnaeus.clip.fastclip`): the length is
  marked static for torch.compile, which then specialises each of the few lengths (multiples of 16, at
  most five) once, as it does for the fixed length, rather than tracing shape-generic code at the second.
- Nothing here knows about Ray: the caller passes the (possibly DDP-wrapped) model and the objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from linnaeus.clip.towers import autocast
from linnaeus.objectives import Objective


@dataclass
class StepResult:
    """A step's loss, gradient norm and the objective's other figures, read from the device only when asked."""

    loss_tensor: torch.Tensor
    grad_norm_tensor: torch.Tensor | None
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)

    @property
    def grad_norm(self) -> float | None:
        return None if self.grad_norm_tensor is None else float(self.grad_norm_tensor)

    @property
    def extras(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.extra_tensors.items()}

    @property
    def logit_scale(self) -> float | None:
        value = self.extra_tensors.get("logit_scale")
        return None if value is None else float(value)


class TrainStep:
    """Runs one optimiser step over a list of micro-batches (dicts of tensors)."""

    def __init__(self, model: torch.nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                 scheduler, device: torch.device, precision: str = "auto", grad_clip_norm: float | None = None):
        self.model, self.objective, self.optimizer, self.scheduler = model, objective, optimizer, scheduler
        self.device, self.precision, self.grad_clip_norm = device, precision, grad_clip_norm

    def __call__(self, micro_batches: list[dict[str, torch.Tensor]]) -> StepResult:
        for batch in micro_batches:
            if "text" in batch:
                torch._dynamo.mark_static(batch["text"], 1)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective.backward(self.model, micro_batches, lambda: autocast(self.device, self.precision))
        grad_norm = None
        if self.grad_clip_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        out.update(self.objective.after_step(self.model))
        loss = out.pop("loss")
        return StepResult(loss, grad_norm, out)
