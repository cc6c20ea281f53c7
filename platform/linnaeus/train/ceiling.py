"""The model-only ceiling of a recipe: synthetic tensors through the same model, batch, precision,
compile and optimiser settings as the real run, on one device, without Ray or data.

Notable:
- Built by `linnaeus.train.build` like the Ray Train loop, and stepped by the same `TrainStep`, so the
  only difference from the real run is where the batch comes from.
- Timed between device synchronisations over `steps` steps after `warmup` steps (compilation and
  autotuning happen in the warmup); peak memory is the allocator's high-water mark over the run.
  FLOPs and MFU are added by the caller (`benchmark.add_flops`), the same way for every mode.
- Plain torch, one process: a multi-GPU run's ceiling is this figure per GPU.
"""

from __future__ import annotations

import time

import torch

from linnaeus.config import TrainConfig
from linnaeus.models import model_config
from linnaeus.train import flops
from linnaeus.train.build import build_model, build_optimisation, compile_model
from linnaeus.train.loss import clip_loss
from linnaeus.train.step import TrainStep


def synthetic_batch(cfg: TrainConfig, device: torch.device, generator: torch.Generator) -> dict:
    size, b = cfg.data.image_size, cfg.schedule.batch_size
    vocab = model_config(cfg.model.arch)["text_cfg"].get("vocab_size", 49408)
    return {"image": torch.randn(b, 3, size, size, generator=generator).to(device),
            "text": torch.randint(1, vocab, (b, cfg.data.context_length), generator=generator).to(device)}


def measure_ceiling(cfg: TrainConfig, device: torch.device, steps: int = 30, warmup: int = 10) -> dict:
    """Images/s, step time and peak memory of the recipe's training step on synthetic data."""
    model = build_model(cfg, device)
    optimizer, scheduler = build_optimisation(cfg, model, warmup + steps + 1)
    compile_model(cfg, model)
    step = TrainStep(model, clip_loss(), optimizer, scheduler, device, cfg.schedule.precision,
                     cfg.optim.grad_clip_norm)
    generator = torch.Generator().manual_seed(cfg.seed)
    micro = [synthetic_batch(cfg, device, generator) for _ in range(cfg.schedule.accumulation)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step(micro)
    flops.sync(device)
    warm = time.perf_counter()
    for _ in range(steps):
        result = step(micro)
    flops.sync(device)
    seconds = time.perf_counter() - warm
    images = steps * cfg.schedule.batch_size * cfg.schedule.accumulation
    out = {"images_per_s": images / seconds, "step_ms": 1000 * seconds / steps, "steps": steps,
           "warmup_steps": warmup, "warmup_s": warm - start, "final_loss": result.loss}
    if device.type == "cuda":
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out

