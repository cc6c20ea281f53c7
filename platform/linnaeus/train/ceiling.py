"""The model-only ceiling of a recipe: synthetic tensors through the same model, batch, precision,
compile and optimiser settings as the real run, on one device, without Ray or data.

Notable:
- Built by `linnaeus.train.build` like the Ray Train loop, and stepped by the same `TrainStep`, so the
  only difference from the real run is where the batch comes from.
- Timed between device synchronisations over `steps` steps after `warmup` steps (compilation and
  autotuning happen in the warmup); peak memory is the allocator's high-water mark over the run.
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ceiling(cfg: TrainConfig, device: torch.device, steps: int = 30, warmup: int = 10) -> dict:
    """Images/s, step time, FLOPs, MFU and peak memory of the recipe's training step on synthetic data."""
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
    sync(device)
    warm = time.perf_counter()
    losses = [step(micro).loss_tensor for _ in range(steps)]
    sync(device)
    seconds = time.perf_counter() - warm
    images = steps * cfg.schedule.batch_size * cfg.schedule.accumulation
    out = {"images_per_s": images / seconds, "step_ms": 1000 * seconds / steps, "steps": steps,
           "warmup_steps": warmup, "warmup_s": warm - start, "final_loss": float(losses[-1]),
           **flop_figures(cfg, images / seconds, device, batch=cfg.schedule.batch_size * cfg.schedule.accumulation)}
    if device.type == "cuda":
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def flop_figures(cfg: TrainConfig, images_per_s: float, device: torch.device,
                 measured_tflops: float | None = None, batch: int | None = None) -> dict:
    """FLOPs per image (at `batch` contrastive pairs, default the recipe's global batch), achieved
    TFLOP/s and MFU against the datasheet and (when given) a measured matmul rate."""
    per_image = flops.step_flops(model_config(cfg.model.arch), batch or cfg.global_batch).train
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = flops.peak_bf16_tflops(name)
    out = {"device": name, "gflop_per_image": per_image / 1e9, "tflops": images_per_s * per_image / 1e12,
           "peak_bf16_tflops": peak, "mfu": flops.mfu(images_per_s, per_image, peak)}
    if measured_tflops:
        out["measured_matmul_tflops"] = measured_tflops
        out["mfu_of_measured"] = flops.mfu(images_per_s, per_image, measured_tflops)
    return out
