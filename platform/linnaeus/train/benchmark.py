"""The training benchmark: one recipe measured four ways, side by side.

- `ceiling`: the model-only rate (synthetic tensors, `linnaeus.train.ceiling`), per device.
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
from pathlib import Path

import torch

from linnaeus import storage
from linnaeus.config import TrainConfig
from linnaeus.data.loader import iter_train_batches
from linnaeus.data.stream import build_stream
from linnaeus.data.webdataset import export_webdataset
from linnaeus.models import model_config
from linnaeus.train import flops
from linnaeus.train.openclip_baseline import run_openclip
from linnaeus.train.plan import TrainPlan



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
    from linnaeus.train.trainer import run_training

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
    tars = export_webdataset(c.data.data, workdir / "wds", tuple(c.data.text_types), c.data.seed, c.data.s3)
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
