"""One optimiser step of CLIP training: mixed precision, gradient accumulation, clipping (plain torch).

Notable:
- Accumulation keeps the contrastive batch whole, as open_clip's `--accum-freq` does: the features of
  every micro-batch are computed once without gradients, then each micro-batch is run again with
  gradients and its features are scored against the cached features of all the others. The loss sees
  the full global batch of negatives, and the summed gradients equal those of one pass over it
  (tests/unit/test_step.py checks that), for one extra forward per micro-batch. The logit scale
  takes its gradient from one pass only, the last (open_clip's loop counts it once per micro-batch);
  under DDP it must be the last: the synchronised pass is where DDP expects every parameter's gradient.
- Under DDP, gradients are all-reduced once per step (`no_sync` on all but the last micro-batch).
- bf16 autocast on GPU, fp32 on CPU by default; the logit scale is clamped to ln(100) after each step.
- No host-device synchronisation: the step only queues GPU work, and `StepResult` turns its tensors
  into numbers when (and only when) someone reads them, so the trainer prepares the next batch while
  the GPU still runs this step. Reading a result every step would serialise the two again.
- Text lengths may differ from batch to batch (cut text, `linnaeus.fastclip`): the length is marked
  static for torch.compile, which then specialises each of the few lengths (multiples of 16, at most
  five) once, as it does for the fixed length, rather than tracing shape-generic code at the second.
- Nothing here knows about Ray: the caller passes the (possibly DDP-wrapped) model and the loss.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

MAX_LOGIT_SCALE = math.log(100)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` (auto | bf16 | fp32 | fp8 | fp8-rowwise) on `device`."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    # bf16 | fp8*: FP8 recipes run bf16 autocast around their float8 linears (linnaeus.train.float8).
    return torch.autocast(device.type, dtype=torch.bfloat16)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@dataclass
class StepResult:
    """A step's loss, gradient norm and temperature, read from the device only when asked."""

    loss_tensor: torch.Tensor
    grad_norm_tensor: torch.Tensor | None
    logit_scale_tensor: torch.Tensor

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)

    @property
    def grad_norm(self) -> float | None:
        return None if self.grad_norm_tensor is None else float(self.grad_norm_tensor)

    @property
    def logit_scale(self) -> float:
        return float(self.logit_scale_tensor)


class TrainStep:
    """Runs one optimiser step over a list of micro-batches {image, text}."""

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, device: torch.device, precision: str = "auto",
                 grad_clip_norm: float | None = None):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.device, self.precision, self.grad_clip_norm = device, precision, grad_clip_norm

    def __call__(self, micro_batches: list[dict[str, torch.Tensor]]) -> StepResult:
        for batch in micro_batches:
            torch._dynamo.mark_static(batch["text"], 1)
        self.optimizer.zero_grad(set_to_none=True)
        if len(micro_batches) == 1:
            loss = self._single(micro_batches[0])
        else:
            loss = self._accumulated(micro_batches)
        grad_norm = None
        if self.grad_clip_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            scale = unwrap(self.model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return StepResult(loss, grad_norm, scale.detach().exp())

    def _single(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_for(self.device, self.precision):
            image_features, text_features, logit_scale = self.model(batch["image"], batch["text"])
            loss = self.loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        return loss.detach()

    def _accumulated(self, micro_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        cached_images, cached_texts = [], []
        with torch.no_grad(), autocast_for(self.device, self.precision):
            for batch in micro_batches:
                image_features, text_features, _ = self.model(batch["image"], batch["text"])
                cached_images.append(image_features)
                cached_texts.append(text_features)
        loss = None
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                with autocast_for(self.device, self.precision):
                    image_features, text_features, logit_scale = self.model(batch["image"], batch["text"])
                    if not last:  # every pass scores the whole batch: the temperature's gradient is
                        logit_scale = logit_scale.detach()  # taken once, in the pass DDP syncs
                    images = torch.cat(cached_images[:j] + [image_features] + cached_images[j + 1:])
                    texts = torch.cat(cached_texts[:j] + [text_features] + cached_texts[j + 1:])
                    loss = self.loss_fn(images, texts, logit_scale)
                loss.backward()
        return loss.detach()
