"""Training checkpoints: what a run needs to continue exactly where it stopped, in a plain folder.

Notable:
- A checkpoint folder holds `model.pt` (the bare open_clip state dict, loadable without Linnaeus),
  `optimizer.pt`, `scheduler.pt`, `objective.pt` (the objective's own modules, e.g. an EMA teacher;
  empty for CLIP), `state.json` (step, total steps, epoch, data position, metric history) and one
  `rng-rank<r>.pt` per worker: Ray Train merges every worker's folder into one.
- The data position is the lowest stream `position` any worker was reading at the step; the stream
  restarts there (see `linnaeus.data.stream`).
- `latest_in_run` reads Ray Train's own run snapshot (`checkpoint_manager_snapshot.json`), so the data
  plane resumes from the very checkpoint Ray hands back to the workers.
- Plain torch + storage; the Ray Train loop decides when to save.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from linnaeus import storage

STATE_NAME = "state.json"
OBJECTIVE_NAME = "objective.pt"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


@dataclass
class Progress:
    step: int = 0
    total_steps: int = 0
    position: int = 0  # stream item to restart from
    epoch: float = 0.0
    history: list[dict] = field(default_factory=list)  # the metrics logged so far (rank 0)
    placement: list[dict] = field(default_factory=list)  # rank -> node, host, device of the latest start
    starts: list[dict] = field(default_factory=list)  # each start of the workers: the step and nodes it began on


def dir_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save(folder: str | Path, rank: int, model: torch.nn.Module, optimizer, scheduler,
         progress: Progress, objective: torch.nn.Module | None = None) -> None:
    """Write this rank's part of a checkpoint into `folder` (rank 0 writes the shared state)."""
    folder = Path(folder)
    torch.save(rng_state(), folder / f"rng-rank{rank}.pt")
    if rank != 0:
        return
    torch.save(_cpu(model), folder / "model.pt")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(_cpu(objective) if objective is not None else {}, folder / OBJECTIVE_NAME)
    (folder / STATE_NAME).write_text(json.dumps(asdict(progress), indent=1))


def load(folder: str | Path, rank: int, model: torch.nn.Module, optimizer, scheduler,
         objective: torch.nn.Module | None = None) -> Progress:
    """Restore model, optimiser, scheduler, the objective's modules and this rank's RNG from `folder`;
    returns the progress."""
    folder = Path(folder)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt"))
    if objective is not None:
        # checkpoints from before objectives had state hold none: fine while the objective has none
        saved = folder / OBJECTIVE_NAME
        objective.load_state_dict(torch.load(saved, map_location="cpu") if saved.exists() else {})
    rng = folder / f"rng-rank{rank}.pt"
    if rng.exists():  # a run resumed on more workers than it had: the new ranks keep their seed
        set_rng_state(torch.load(rng, weights_only=False))
    return Progress(**json.loads((folder / STATE_NAME).read_text()))


def read_progress(checkpoint: storage.Location) -> Progress:
    return Progress(**json.loads(storage.read_bytes(checkpoint.join(STATE_NAME))))


def latest_in_run(run: storage.Location) -> storage.Location | None:
    """The checkpoint Ray Train will resume `run` from, or None when the run has none yet."""
    snapshot = run.join(RAY_SNAPSHOT)
    if not storage.exists(snapshot):
        return None
    latest = json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result")
    return run.join(latest["checkpoint_dir_name"]) if latest else None
