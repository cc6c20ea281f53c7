"""The model, objective, optimiser and schedule of a training recipe, built the same way by the Ray Train
loop and by the model-only benchmark (`linnaeus.bench.ceiling`), so the two measure the same thing.

Notable:
- The model is the recipe's architecture with its text tower (`linnaeus.clip.text_towers`); the
  objective comes from its registry and builds its own modules (an EMA teacher) from the fresh model.
- The exact speed-ups of `linnaeus.clip.fastclip` (fused attention; text cut after the longest caption,
  which the data loader does) change how the step runs, never the weights' names or values.
- `model.compile_ddp` picks how torch.compile meets DDP: one whole graph (default) or graphs cut at
  DDP's gradient buckets (torch's own default) so the all-reduce overlaps the backward.
- Order matters: FP8 layers are swapped in before the optimiser sees the parameters, and
  `torch.compile` comes last (`compile_model`), after any checkpoint has been restored into the eager
  modules.
- Plain torch: rank is an argument (it seeds the random initialisation).
"""

from __future__ import annotations

import logging

import torch

from linnaeus.clip import fastclip, float8
from linnaeus.clip.text_towers import create_with_tower, make_tower
from linnaeus.config import TrainConfig
from linnaeus.objectives import Objective, make_objective
from linnaeus.runs import init_seed
from linnaeus.train.optim import build_optimizer, cosine_with_warmup

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, device: torch.device, rank: int = 0) -> torch.nn.Module:
    tower = make_tower(cfg.model.text_tower.name, cfg.model.text_tower.params)
    model = create_with_tower(cfg.model.arch, tower, cfg.model.init, cfg.s3, seed=init_seed(cfg.seed, rank))
    model = model.to(device)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.model.fused_attention:
        fastclip.fuse_attention(model)
    if cfg.data.cut_text:
        tower.accept_cut_text(model)
    if cfg.schedule.precision in float8.RECIPES:
        swapped = float8.convert(model, cfg.schedule.precision, device)
        if rank == 0:
            log.info("[train] %s: %d MLP linears run FP8 matmuls", cfg.schedule.precision, swapped)
    return model


def build_objective(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, rank: int = 0,
                    world_size: int = 1) -> Objective:
    """The recipe's objective, its own modules built from `model` (before any checkpoint is restored)."""
    objective = make_objective(cfg.objective.name, cfg.objective.params, rank, world_size)
    objective.attach(model)
    return objective.to(device)


def build_optimisation(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    """(optimizer, scheduler) for `model` as the recipe asks."""
    o = cfg.optim
    optimizer = build_optimizer(model, o.lr, o.weight_decay, o.betas, o.eps)
    return optimizer, cosine_with_warmup(optimizer, o.warmup_steps, total_steps)


def compile_model(cfg: TrainConfig, model: torch.nn.Module) -> None:
    if cfg.model.compile:
        # A process-wide dynamo setting; a training worker compiles this one model. False = DDP's
        # buckets do not cut the graph (2 H200s: 1.93 x one GPU, vs 1.88 x cut; docs/benchmarks.md).
        torch._dynamo.config.optimize_ddp = cfg.model.compile_ddp == "split"
        if cfg.data.cut_text:  # up to 5 text lengths x (grad, no-grad under accumulation) graphs
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
        model.compile()
