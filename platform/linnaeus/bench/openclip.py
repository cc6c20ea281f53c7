"""open_clip's own trainer (`open_clip_train.main`) on the same images and settings as a Linnaeus recipe:
the baseline of the training benchmark.

Notable:
- The recipe maps onto open_clip_train's flags: model, per-GPU batch, bf16 autocast (`amp_bf16`),
  AdamW's lr / betas / eps / weight decay, warmup, gradient clipping, torch.compile. It reads the
  corpus rewritten as WebDataset tars (`linnaeus.bench.webdataset`), resampled so that exactly `steps`
  steps run.
- It runs as a subprocess of the venv's python through a two-line launcher that registers this
  project's model configs first, so tiny test configs work as they do in Linnaeus.
- Throughput is read from its log lines: open_clip averages "Batch (t)" and "Data (t)" over each
  logging window (and resets them), so images/s = batch / batch time and data wait = data / batch time,
  the same quantities as the Linnaeus progress lines.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from linnaeus.config import TrainConfig

LAUNCHER = ("import sys, open_clip, linnaeus.clip.models as m; m.register_configs(); "
            "from open_clip_train.main import main; main(sys.argv[1:])")
LINE = re.compile(r"Train Epoch: \d+ \[\s*(?P<seen>\d+)/.*?Data \(t\): (?P<data>[\d.]+) "
                  r"Batch \(t\): (?P<batch>[\d.]+),.*?Contrastive_loss: (?P<loss>[\d.]+)")
PRECISION = {"auto": "amp_bf16", "bf16": "amp_bf16", "fp32": "fp32"}


def openclip_argv(cfg: TrainConfig, tars: list[Path], steps: int, logs: Path, name: str, workers: int,
                  log_every: int, device: str = "cuda") -> list[str]:
    if cfg.schedule.precision not in PRECISION:
        raise ValueError(f"open_clip_train has no {cfg.schedule.precision} recipe: compare with bf16")
    first, last = tars[0].stem, tars[-1].stem
    o, s = cfg.optim, cfg.schedule
    argv = ["--train-data", str(tars[0].parent / f"{{{first}..{last}}}.tar"), "--dataset-type", "webdataset",
            "--dataset-resampled", "--train-num-samples", str(steps * s.batch_size * s.accumulation), "--epochs", "1",
            "--model", cfg.model.arch, "--batch-size", str(s.batch_size), "--precision", PRECISION[s.precision],
            "--lr", str(o.lr), "--wd", str(o.weight_decay), "--beta1", str(o.betas[0]), "--beta2", str(o.betas[1]),
            "--eps", str(o.eps), "--warmup", str(o.warmup_steps), "--workers", str(workers),
            "--log-every-n-steps", str(log_every), "--save-frequency", "0", "--logs", str(logs), "--name", name,
            "--seed", str(cfg.seed), "--device", device, "--report-to", ""]
    if o.grad_clip_norm is not None:
        argv += ["--grad-clip-norm", str(o.grad_clip_norm)]
    if cfg.model.compile:
        argv.append("--torchcompile")
    if cfg.model.grad_checkpointing:
        argv.append("--grad-checkpointing")
    if s.accumulation > 1:
        argv += ["--accum-freq", str(s.accumulation)]
    return argv


def parse_log(text: str, batch_size: int) -> list[dict]:
    """One record per open_clip progress line: images seen, images/s, data wait share, loss."""
    out = []
    for m in LINE.finditer(text):
        batch_t, data_t = float(m["batch"]), float(m["data"])
        out.append({"seen": int(m["seen"]), "images_per_s": batch_size / batch_t if batch_t else 0.0,
                    "data_wait": data_t / batch_t if batch_t else 0.0, "loss": float(m["loss"])})
    return out


def run_openclip(cfg: TrainConfig, tars: list[Path], steps: int, logs: Path, workers: int, log_every: int,
                 device: str = "cuda", timeout: float | None = None) -> tuple[list[dict], str]:
    """Run open_clip_train; returns its parsed progress records and its whole output."""
    argv = openclip_argv(cfg, tars, steps, logs, f"openclip-{time.strftime('%Y%m%d-%H%M%S')}", workers,
                         log_every, device)
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True,
                          timeout=timeout)
    output = done.stdout + done.stderr
    records = parse_log(output, cfg.schedule.batch_size * cfg.schedule.accumulation)
    if done.returncode != 0 or not records:  # it exits 0 on some errors ("Experiment already exists")
        raise RuntimeError(f"open_clip_train exited {done.returncode} with {len(records)} progress lines: "
                           f"{output[-2000:]}")
    return records, output
