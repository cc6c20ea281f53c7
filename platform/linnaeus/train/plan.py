"""What a training run will do, worked out on the driver before any cluster work.

Notable:
- The step count is fixed here, from the manifest: `schedule.steps`, or `epochs x rows / global batch`
  (at least one step). It is saved with the run, so a resumed run ends on the same step; a resume on a
  corpus that has changed since (a different row-group count) is refused, since data positions would
  no longer mean the same images.
- The stream is planned from the resume position to the end of the epoch after the last one the steps
  need: skipped images and the per-worker `drop_last` can never make it run dry before the last step,
  and the spare epoch costs nothing (Ray Data only reads what the trainers pull).
- Runs live at `<storage_path>/<name>`; the default name is `<recipe>-<UTC time>`, so reusing a name is
  a deliberate resume. The run record beside the checkpoints is `linnaeus.runs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from linnaeus import runs, storage
from linnaeus.config import ConfigError, TrainConfig, apply_overrides, validate
from linnaeus.data import shards


@dataclass(frozen=True)
class TrainPlan:
    config: TrainConfig
    name: str
    rows: int  # rows in the corpus (one epoch)
    units: int  # row groups in the corpus (stream items per epoch)
    total_steps: int

    @property
    def run_uri(self) -> str:
        return self.run.uri

    @property
    def run(self) -> storage.Location:
        return storage.resolve(self.config.checkpoint.storage_path, self.config.s3).join(self.name)

    @property
    def export_uri(self) -> str:
        return self.config.export or self.run.join("export").uri

    @property
    def epochs(self) -> float:
        return self.total_steps * self.config.global_batch / self.rows

    def stream_epochs(self, position: int, steps_done: int) -> tuple[int, int]:
        """(first epoch, number of epochs) to plan for a stream resuming at item `position` after
        `steps_done` steps: through one spare epoch past the one where the last step should land."""
        rows_left = (self.total_steps - steps_done) * self.config.global_batch
        items_left = math.ceil(rows_left / self.rows * self.units)
        start_epoch = position // self.units
        return start_epoch, (position + items_left) // self.units + 2 - start_epoch

    def summary(self) -> list[str]:
        c = self.config
        return [f"run        {self.run_uri}",
                f"corpus     {c.data.data}: {self.rows:,} images, {self.units:,} row groups",
                f"model      {c.model.arch} (init: {c.model.init or 'random'})",
                f"batch      global {c.global_batch:,} = {c.schedule.batch_size} per worker x "
                f"{c.scaling.workers} worker(s) x {c.schedule.accumulation} accumulation",
                f"schedule   {self.total_steps:,} steps = {self.epochs:.2f} epochs, lr {c.optim.lr:g}, "
                f"warmup {c.optim.warmup_steps}, weight decay {c.optim.weight_decay:g}",
                f"checkpoint every {c.checkpoint.every_steps} steps, keep {c.checkpoint.keep}, "
                f"max failures {c.checkpoint.max_failures}",
                f"export     {self.export_uri}", *self.warnings()]

    def warnings(self) -> list[str]:
        c, out = self.config, []
        if c.optim.warmup_steps >= self.total_steps:
            out.append(f"warning    optim.warmup_steps={c.optim.warmup_steps} is not shorter than the run "
                       f"({self.total_steps} steps): the learning rate never reaches optim.lr")
        if c.global_batch > self.rows:
            out.append(f"warning    the global batch ({c.global_batch:,}) is larger than the corpus "
                       f"({self.rows:,} images): every step repeats images")
        return out


def default_name(recipe: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{recipe}-{now:%Y%m%d-%H%M%S}"


def plan_training(cfg: TrainConfig, recipe: str = "run") -> TrainPlan:
    """Read the corpus manifest and fix the run's name and step count (raises CorpusError)."""
    manifest = shards.read_manifest(storage.resolve(cfg.data.data, cfg.data.s3))
    if manifest.rows == 0:
        raise shards.CorpusError(f"{cfg.data.data}: the corpus has no rows")
    units = sum(e.row_groups for e in manifest.shards)
    steps = cfg.schedule.steps or max(1, math.floor(cfg.schedule.epochs * manifest.rows / cfg.global_batch))
    return TrainPlan(cfg, cfg.checkpoint.name or default_name(recipe), manifest.rows, units, steps)



def load_plan(run_uri: str, overrides: Sequence[str] = (), s3: storage.S3Options | None = None) -> TrainPlan:
    """The plan of an earlier run, read back from `<run>/linnaeus_train.json` (what `--resume` does);
    dotted `overrides` may change e.g. the number of workers, never the step count."""
    if s3 is None:  # a recipe's s3: section is never saved; `--set s3.endpoint_url=...` brings it back
        s3_raw = apply_overrides({}, [o for o in overrides if o.strip().startswith("s3.")]).get("s3")
        s3 = validate(storage.S3Options, s3_raw, "--set s3.*") if s3_raw else None
    run = storage.resolve(run_uri, s3)
    try:
        record = runs.read_record(run)
    except runs.RunError as exc:
        raise ConfigError(f"--resume {exc}") from None
    parent, name = run.uri.rsplit("/", 1)
    raw = apply_overrides(record.config, [*overrides, f"checkpoint.storage_path={parent}",
                                          f"checkpoint.name={name}"])
    cfg = validate(TrainConfig, raw, run.join(runs.RECORD_NAME).uri)
    units = sum(e.row_groups for e in shards.read_manifest(storage.resolve(cfg.data.data, cfg.data.s3)).shards)
    if units != record.units:
        raise ConfigError(f"--resume {run.uri}: the corpus {cfg.data.data} has changed since the run started "
                          f"({units} row groups now, {record.units} then); a run resumes on the corpus it "
                          "started on (re-ingested corpora start new runs)")
    return TrainPlan(cfg, name, record.rows, record.units, record.total_steps)


def record_of(plan: TrainPlan) -> runs.RunRecord:
    """The run record of a plan (what `--resume` reads back), without credentials."""
    config = plan.config.model_dump(mode="json", exclude={"s3": True, "data": {"s3"}})
    return runs.RunRecord(plan.name, plan.total_steps, plan.rows, plan.units, config)
