"""What a finished run leaves beside its exported model: metrics CSV/JSON, a training-curve PNG, a summary.

Notable:
- Everything is built from the final checkpoint (its `model.pt` and the metric history in its
  `state.json`), by the driver: the export works the same whether the workers ran on this machine or
  on a remote cluster, and for a run that was restarted on the way (the history is the checkpointed
  one, so steps after the last checkpoint before a failure are not counted twice).
- The model goes out in open_clip's own layout (`linnaeus.clip.exports.export_model`), naming its text
  tower and the recipe's plugins when they are not open_clip's own.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import torch

from linnaeus import storage
from linnaeus.clip.exports import export_model
from linnaeus.clip.text_towers import create_with_tower, make_tower
from linnaeus.train.checkpoint import STATE_NAME, Progress
from linnaeus.train.plan import TrainPlan

METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "logit_scale", "grad_norm", "images_per_s", "data_wait",
                  "eta_s", "gpu_mem_gib"]


def metrics_csv(history: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue().encode()


def curve_png(history: list[dict], title: str) -> bytes:
    """Loss, learning rate and throughput against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for ax, key, label in zip(axes, ("loss", "lr", "images_per_s"), ("CLIP loss", "learning rate", "img/s")):
        ax.plot(steps, [h[key] for h in history], marker="." if len(steps) < 50 else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimiser step")
    axes[0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(plan: TrainPlan, checkpoint_folder: str | Path, checkpoint_uri: str, skipped: dict,
                  seconds: float, storage_retries: Callable[[], dict] | None = None) -> dict:
    """Export the model of a final checkpoint folder and write the run's metrics next to it;
    `storage_retries()` is the job's S3 retry count, asked for last (the export's retries count)."""
    folder = Path(checkpoint_folder)
    progress = Progress(**json.loads((folder / STATE_NAME).read_text()))
    c = plan.config
    arch = c.model.arch
    model = create_with_tower(arch, make_tower(c.model.text_tower.name, c.model.text_tower.params))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu"))
    out = export_model(model, arch, plan.export_uri, c.s3, plugins=c.plugins)
    history = progress.history
    storage.write_bytes(out.join("metrics.csv"), metrics_csv(history))
    storage.write_bytes(out.join("metrics.json"), json.dumps(history, indent=1).encode())
    if history:
        storage.write_bytes(out.join("training_curve.png"),
                            curve_png(history, f"{plan.name}: {arch}, global batch {plan.config.global_batch}"))
    summary = {"run": plan.run_uri, "export": out.uri, "checkpoint": checkpoint_uri, "arch": arch,
               "steps": progress.step, "total_steps": plan.total_steps, "epochs": round(progress.epoch, 4),
               "global_batch": plan.config.global_batch, "final_loss": history[-1]["loss"] if history else None,
               "skipped_images": skipped.get("skipped", 0), "skipped_by_reason": skipped.get("by_reason", {}),
               "wall_seconds": round(seconds, 1), "nodes": len({p["node"] for p in progress.placement}) or None,
               "placement": progress.placement, "starts": progress.starts,
               "storage_retries": storage_retries() if storage_retries else None}
    storage.write_bytes(out.join("summary.json"), json.dumps(summary, indent=1).encode())
    return summary
