"""The model, optimiser and schedule of a training recipe, built the same way by the Ray Train loop and
by the model-only benchmark (`linnaeus.train.ceiling`), so the two measure the same thing.

Notable:
- The exact speed-ups of `linnaeus.fastclip` (fused attention; text cut after the longest caption, which
  the data loader does) change how the step runs, never the weights' names or values.
- Order matters: FP8 layers are swapped in before the optimiser sees the parameters, and
  `torch.compile` comes last (`compile_model`), after any checkpoint has been restored into the eager
  modules.
- Plain torch: rank is an argument (it seeds the random initialisation).
"""

from __future__ import annotations

import logging

import torch

from linnaeus import fastclip
from linnaeus.config import TrainConfig
from linnaeus.models import create_model
from linnaeus.train import float8
from linnaeus.train.optim import build_optimizer, cosine_with_warmup
from linnaeus.train.plan import init_seed

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, device: torch.device, rank: int = 0) -> torch.nn.Module:
    model = create_model(cfg.model.arch, cfg.model.init, cfg.s3, seed=init_seed(cfg.seed, rank)).to(device)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.model.fused_attention:
        fastclip.fuse_attention(model)
    if cfg.data.cut_text:
        fastclip.accept_cut_text(model)
    if cfg.schedule.precision in float8.RECIPES:
        swapped = float8.convert(model, cfg.schedule.precision, device)
        if rank == 0:
            log.info("[train] %s: %d MLP linears run FP8 matmuls", cfg.schedule.precision, swapped)
    return model


def build_optimisation(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    """(optimizer, scheduler) for `model` as the recipe asks."""
    o = cfg.optim
    optimizer = build_optimizer(model, o.lr, o.weight_decay, o.betas, o.eps)
    return optimizer, cosine_with_warmup(optimizer, o.warmup_steps, total_steps)


def compile_model(cfg: TrainConfig, model: torch.nn.Module) -> None:
    if cfg.model.compile:
        model.compile()
