"""The training benchmark: one recipe measured four ways, side by side.

- `ceiling`: the model-only rate (synthetic tensors, `linnaeus.bench.ceiling`), per device.
- `data`: the data path alone: the recipe's Ray Data stream consumed as a train worker consumes it
  (decoded, cropped, normalised on its device), with no model. When this is below the ceiling, the
  data path cannot feed the GPU whatever the trainer does: the case for `data.decode: gpu`.
- `e2e`: the real job (`run_training`: Ray Train, the stream, checkpoints, export), read from the run's
  own metric history; steady state = the logging windows after `warmup` steps.
- `openclip`: open_clip's own trainer on the same images (as WebDataset tars) with the same settings.

Notable:
- Rates are images/s per GPU (a multi-worker e2e figure is divided by the worker count), so they
  compare with the single-device ceiling directly.
- Steady-state rates are total images over total time of the steady windows, not a mean of window
  rates (which would overweight fast windows).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from linnaeus import storage
from linnaeus.bench import flops
from linnaeus.bench.openclip import run_openclip
from linnaeus.bench.webdataset import export_webdataset
from linnaeus.clip.models import model_config
from linnaeus.config import TrainConfig
from linnaeus.data.loader import iter_train_batches
from linnaeus.data.stream import build_stream
from linnaeus.train.plan import TrainPlan
from linnaeus.train.trainer import run_training


def steady(records: list[dict], first_step: int, batch_per_step: int, step_key: str = "step") -> dict:
    """Images/s and data wait over the logging windows that start at or after `first_step`. Each record
    is one window {step, images_per_s, data_wait} covering the steps since the previous record."""
    images = seconds = waited = 0.0
    previous, windows = 0, 0
    for record in records:
        steps = record[step_key] - previous
        previous = record[step_key]
        if record[step_key] - steps < first_step or not record["images_per_s"]:
            continue
        windows += 1
        window = steps * batch_per_step
        images += window
        seconds += window / record["images_per_s"]
        waited += record["data_wait"] * window / record["images_per_s"]
    if not seconds:
        return {"images_per_s": None, "data_wait": None, "windows": 0}
    return {"images_per_s": images / seconds, "data_wait": waited / seconds, "windows": windows}


def data_only(plan: TrainPlan, device: torch.device, batches: int, warmup: int) -> dict:
    """Images/s the recipe's stream delivers to one consumer on `device`, with no training."""
    cfg = plan.config
    epochs = max(1, math.ceil((batches + warmup) * cfg.schedule.batch_size / max(plan.rows, 1)) + 1)
    stream = build_stream(cfg.data, epochs=epochs)
    it = iter_train_batches(stream.dataset.iterator(), cfg.data, cfg.schedule.batch_size, device)
    for _ in range(warmup):
        next(it)
    flops.sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(it)["text"])
    flops.sync(device)
    seconds = time.perf_counter() - start
    it.close()
    return {"images_per_s": images / seconds, "batches": batches, "warmup_batches": warmup,
            "preprocess_workers": cfg.data.preprocess_workers, "decode": cfg.data.decode}


def end_to_end(plan: TrainPlan, warmup: int) -> dict:
    """The real training job; its steady-state rate per GPU from the run's metric history."""
    summary = run_training(plan)
    history = json.loads(storage.read_bytes(storage.resolve(summary["export"], plan.config.s3).join(
        "metrics.json")))
    c = plan.config
    rate = steady(history, warmup, c.global_batch)
    per_gpu = rate["images_per_s"] / c.scaling.workers if rate["images_per_s"] else None
    tokens = [h["text_tokens"] for h in history if h["step"] > warmup and h.get("text_tokens")]
    return {"images_per_s": per_gpu, "images_per_s_global": rate["images_per_s"], "workers": c.scaling.workers,
            "text_tokens": sum(tokens) / len(tokens) if tokens else None,
            "data_wait": rate["data_wait"], "steady_windows": rate["windows"], "warmup_steps": warmup,
            "peak_gpu_mem_gib": max((h["gpu_mem_gib"] for h in history if h.get("gpu_mem_gib")), default=None),
            "loss_curve": [[h["step"], h["loss"]] for h in history], "wall_s": summary["wall_seconds"],
            "run": summary["run"]}


def openclip(plan: TrainPlan, workdir: Path, steps: int, warmup: int, workers: int, log_every: int,
             device: str) -> dict:
    """open_clip_train on the recipe's corpus and settings (one process, one device)."""
    c = plan.config
    tars = export_webdataset(c.data.data, workdir / "wds", tuple(c.data.text_types), c.data.seed, c.data.s3,
                             c.data.text_source)
    start = time.perf_counter()
    records, output = run_openclip(c, tars, steps, workdir / "logs", workers, log_every, device)
    (workdir / "openclip.log").write_text(output)
    batch = c.schedule.batch_size * c.schedule.accumulation
    for record in records:
        record["step"] = record["seen"] // batch
    rate = steady(records, warmup, batch)
    return {"images_per_s": rate["images_per_s"], "data_wait": rate["data_wait"],
            "steady_windows": rate["windows"], "dataloader_workers": workers,
            "loss_curve": [[r["step"], r["loss"]] for r in records], "wall_s": time.perf_counter() - start,
            "log": str(workdir / "openclip.log")}


def summarise(results: dict) -> dict:
    """Ratios between the modes that ran, and whether the data path can keep up."""
    rate = {k: (results.get(k) or {}).get("images_per_s") for k in ("ceiling", "data", "e2e", "openclip")}
    out = {}
    if rate["e2e"] and rate["ceiling"]:
        out["e2e_over_ceiling"] = rate["e2e"] / rate["ceiling"]
    if rate["data"] and rate["ceiling"]:
        out["data_over_ceiling"] = rate["data"] / rate["ceiling"]
        out["data_path"] = ("keeps up with the model" if rate["data"] >= rate["ceiling"] else
                            "cannot feed the model: the run will be data-bound")
    if rate["e2e"] and rate["openclip"]:
        out["linnaeus_over_openclip"] = rate["e2e"] / rate["openclip"]
    return out


def device_for(cfg: TrainConfig) -> torch.device:
    return torch.device("cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu")


def add_flops(result: dict, cfg: TrainConfig, device: torch.device, measured: float | None,
              peak: float | None = None, one_process: bool = False) -> dict:
    """Add FLOPs per image, achieved TFLOP/s and MFU (against `peak` or the datasheet rate, and against
    the `measured` matmul rate) to a mode's result, for the caption length it ran (`text_tokens`, when the
    mode reports one; else the full context). The contrastive logits count against one device's
    batch in `one_process` modes (ceiling, openclip) and against the global batch in the e2e run."""
    if not result.get("images_per_s"):
        return result
    batch = cfg.schedule.batch_size * cfg.schedule.accumulation if one_process else cfg.global_batch
    per_image = flops.step_flops(model_config(cfg.model.arch), batch, result.get("text_tokens")).train
    rate = result["images_per_s"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak or flops.peak_bf16_tflops(name)
    result.update({"device": name, "gflop_per_image": per_image / 1e9, "tflops": rate * per_image / 1e12,
                   "peak_bf16_tflops": peak, "mfu": flops.mfu(rate, per_image, peak)})
    if measured:
        result.update({"measured_matmul_tflops": measured, "mfu_of_measured": flops.mfu(rate, per_image, measured)})
    return result


MODES = ("ceiling", "data", "e2e", "openclip")
GOALS = {"e2e_over_ceiling": 0.95, "e2e_images_per_s": 3000.0, "linnaeus_over_openclip": 1.3}


@dataclass(frozen=True)
class TrainBenchmark:
    """What to measure: which modes, for how long, and where the runs and logs go."""

    output: Path
    modes: tuple[str, ...] = ("ceiling", "data", "e2e")
    steps: int = 200  # optimiser steps of the e2e and openclip runs
    warmup_steps: int = 40  # left out of their steady state
    ceiling_steps: int = 30
    ceiling_warmup: int = 10  # steps before timing (compilation)
    data_batches: int = 100
    openclip_workers: int = 1  # open_clip_train's dataloader processes
    peak_tflops: float | None = None  # bf16 peak for MFU when the device is not in flops' table
    matmul_probe: bool = True  # measure the bf16 matmul rate first


def run_benchmark(plan: TrainPlan, opts: TrainBenchmark, log=print) -> dict:
    """Every mode of `opts` on the recipe of `plan` (Ray is started here when a mode needs it)."""
    from linnaeus.bench.ceiling import measure_ceiling
    from linnaeus.runtime import init_ray
    from linnaeus.train.trainer import share_cluster_cpus

    cfg = plan.config
    device = device_for(cfg)
    measured = flops.measure_matmul_tflops(device) if device.type == "cuda" and opts.matmul_probe else None
    results: dict = {"global_batch": cfg.global_batch, "measured_matmul_tflops": measured}
    if "ceiling" in opts.modes:
        ceiling = measure_ceiling(cfg, device, opts.ceiling_steps, opts.ceiling_warmup)
        results["ceiling"] = add_flops(ceiling, cfg, device, measured, opts.peak_tflops, one_process=True)
        log(report_line("ceiling", results["ceiling"]))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if {"data", "e2e"} & set(opts.modes):
        init_ray()
    if "data" in opts.modes:
        results["data"] = data_only(share_cluster_cpus(plan), device, opts.data_batches, warmup=5)
        log(report_line("data", results["data"]))
    if "e2e" in opts.modes:
        results["e2e"] = add_flops(end_to_end(plan, opts.warmup_steps), cfg, device, measured, opts.peak_tflops)
        log(report_line("e2e", results["e2e"]))
    if "openclip" in opts.modes:
        baseline = openclip(plan, opts.output / "openclip", opts.steps, opts.warmup_steps, opts.openclip_workers,
                            cfg.schedule.log_every, device.type)
        results["openclip"] = add_flops(baseline, cfg, device, measured, opts.peak_tflops, one_process=True)
        log(report_line("openclip", results["openclip"]))
    results["summary"] = summarise(results)
    results["goals"] = goals(results)
    return results


def report_line(mode: str, r: dict) -> str:
    parts = [f"[{mode}] {r['images_per_s']:,.0f} img/s per GPU" if r.get("images_per_s") else f"[{mode}] -"]
    if r.get("mfu") is not None:
        parts.append(f"MFU {r['mfu']:.1%} of {r['peak_bf16_tflops']:g} TFLOP/s")
    if r.get("mfu_of_measured") is not None:
        parts.append(f"{r['mfu_of_measured']:.1%} of the measured {r['measured_matmul_tflops']:.0f}")
    if r.get("gflop_per_image"):
        parts.append(f"{r['gflop_per_image']:.1f} GFLOP/img")
    if r.get("data_wait") is not None:
        parts.append(f"data wait {r['data_wait']:.0%}")
    if r.get("peak_gpu_mem_gib"):
        parts.append(f"peak {r['peak_gpu_mem_gib']:.1f} GiB")
    return " | ".join(parts)


def goals(results: dict) -> dict:
    s, e2e = results["summary"], (results.get("e2e") or {}).get("images_per_s")
    have = {"e2e_over_ceiling": s.get("e2e_over_ceiling"), "e2e_images_per_s": e2e,
            "linnaeus_over_openclip": s.get("linnaeus_over_openclip")}
    return {k: {"goal": GOALS[k], "measured": v, "met": v >= GOALS[k]} for k, v in have.items() if v is not None}
