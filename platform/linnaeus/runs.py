"""Run records: what a training run writes beside its checkpoints, read back by `--resume` and by
evaluation (`init:<run>`), so neither has to import the trainer.

Notable:
- `<run>/linnaeus_train.json` holds the run's name, its fixed step count, the corpus's rows and row
  groups when it started, and the recipe as validated (credentials never: `s3` sections are left out).
- `init_seed(seed, rank)` is the seed a rank builds its model from. DDP starts every rank from rank 0's
  weights, so a run's random initialisation is reproducible from its recipe alone (evaluation compares a
  trained model against exactly that).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from linnaeus import storage
from linnaeus.taxonomy import stable_hash64

RECORD_NAME = "linnaeus_train.json"


class RunError(ValueError):
    """A folder that is not a Linnaeus run (names the URI)."""


@dataclass(frozen=True)
class RunRecord:
    name: str
    total_steps: int
    rows: int  # rows in the corpus (one epoch)
    units: int  # row groups in the corpus (stream items per epoch)
    config: dict  # the recipe, JSON-ready, without credentials


def write_record(run: storage.Location, record: RunRecord) -> None:
    storage.write_bytes(run.join(RECORD_NAME), json.dumps(asdict(record), indent=1).encode())


def has_record(run: storage.Location) -> bool:
    return storage.exists(run.join(RECORD_NAME))


def read_record(run: storage.Location) -> RunRecord:
    loc = run.join(RECORD_NAME)
    if not storage.exists(loc):
        raise RunError(f"{run.uri}: not a Linnaeus run folder ({RECORD_NAME} is missing)")
    raw = json.loads(storage.read_bytes(loc))
    return RunRecord(raw["name"], raw["total_steps"], raw["rows"], raw["units"], raw["config"])


def init_seed(seed: int, rank: int) -> int:
    """The seed a rank builds its model from (the same on every machine)."""
    return stable_hash64(seed, "train", rank) % 2**63
