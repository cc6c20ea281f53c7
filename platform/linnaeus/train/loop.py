"""The Ray Train worker loop: stream shard -> TrainStep -> progress, metrics and checkpoints.

Notable:
- Rank and world size come from the Ray Train context and reach the objective as arguments; the model,
  objective and step are plain torch. Plugin parts the recipe names are imported first, in each worker.
- Every rank calls `ray.train.report` at the same steps (it is a barrier): every `log_every` steps with
  metrics, and every `checkpoint.every_steps` and at the last step with a checkpoint that every rank
  contributes to (its RNG state; rank 0 adds the model, optimiser, scheduler, the objective's modules
  and progress).
- The loss shown is the mean over ranks; img/s counts the global batch; "data wait" is the share of
  rank 0's time spent blocked on the stream, the number to watch when the GPUs are starved.
- Between progress lines nothing waits for the GPU (see `step.StepResult`): the data position is read
  only when a checkpoint needs it, and with `decode=gpu` the equal-batch check reduces over gloo.
- On resume each rank reads the checkpoint from its own download (`_local_folder`): Ray's shared
  `as_directory` download can be redone under a rank that is reading it.
- `faults.kill_at_step` kills one worker process once (a marker in the run folder stops it repeating
  after the restart): the chaos test of the failure path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
import warnings

import pyarrow.fs
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from linnaeus import storage
from linnaeus.data.loader import iter_train_batches
from linnaeus.objectives import Objective, unwrap
from linnaeus.registry import load_plugins
from linnaeus.train import checkpoint as ckpt
from linnaeus.train import metrics as train_metrics
from linnaeus.train.build import build_model, build_objective, build_optimisation, compile_model
from linnaeus.train.plan import TrainPlan
from linnaeus.train.step import TrainStep

log = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict) -> None:
    plan: TrainPlan = loop_config["plan"]
    storage.set_retry_listener(loop_config["retries"])  # this worker's filesystems (checkpoint lookups) count
    cfg = plan.config
    log.setLevel(logging.INFO)
    _quiet_report_lines()
    # open_clip's gather goes through torch.distributed.nn, which newer torch marks deprecated per call.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    load_plugins(cfg.plugins)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    model = build_model(cfg, device, rank)
    objective = build_objective(cfg, model, device, rank, world)
    optimizer, scheduler = build_optimisation(cfg, model, plan.total_steps)
    progress = (_restore(rank, model, optimizer, scheduler, objective)
                or ckpt.Progress(total_steps=plan.total_steps))
    compile_model(cfg, model)
    ddp = ray.train.torch.prepare_model(model)
    step = TrainStep(ddp, objective, optimizer, scheduler, device, cfg.schedule.precision, cfg.optim.grad_clip_norm)
    progress.placement = _placement(rank, world, device)  # before the stream: nothing to close if it fails
    progress.starts.append({"step": progress.step, "nodes": sorted({p["node"] for p in progress.placement})})
    batches = iter_train_batches(ray.train.get_dataset_shard("train"), cfg.data, cfg.schedule.batch_size,
                                 device)
    meter = Meter(plan, rank, progress.step)
    if rank == 0:
        log.info("[train] rank 0 of %d on %s, from step %d/%d, global batch %d; %d node(s)", world, device,
                 progress.step, plan.total_steps, cfg.global_batch, len({p["node"] for p in progress.placement}))
    sizes_group = dist.new_group(backend="gloo") if world > 1 and cfg.data.decode == "gpu" else None
    try:
        while progress.step < plan.total_steps:
            micro = meter.take(batches, cfg.schedule.accumulation)
            if cfg.data.decode == "gpu":
                micro = _equal_across_ranks(micro, batches, meter, sizes_group)
            result = step(micro)
            progress.step += 1
            progress.epoch = progress.step * cfg.global_batch / plan.rows
            _maybe_fail(plan, rank, progress.step)
            _report(plan, rank, device, (model, optimizer, scheduler, objective), progress, meter, result,
                    [b["position"] for b in micro])
    finally:
        batches.close()  # stops the GPU path's prefetch thread


def _placement(rank: int, world: int, device: torch.device) -> list[dict]:
    """Where every rank runs (gathered once per start): the run's summary shows the nodes it spanned."""
    mine = {"rank": rank, "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "device": str(device)}
    if world == 1:
        return [mine]
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def _quiet_report_lines() -> None:
    """Ray Train logs one INFO line per report per worker, which would drown the progress lines. Its
    logger is named after its file, so RunConfig's LoggingConfig (which filters `ray.train.*`) misses it."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a later Ray that moved it
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


@contextlib.contextmanager
def _local_folder(checkpoint: ray.train.Checkpoint):
    """The checkpoint as a local folder: itself when local, else this rank's own download.

    Not `as_directory()`: its download is shared by the ranks of a node through one folder, and a rank
    that starts after another finished downloads again over files the other is reading (seen as a
    corrupt optimizer.pt on resume from S3; ray-project/ray#48726)."""
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix="linnaeus-restore-") as tmp:
        yield checkpoint.to_directory(tmp)


def _restore(rank: int, model, optimizer, scheduler, objective: Objective) -> ckpt.Progress | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with _local_folder(checkpoint) as folder:
        progress = ckpt.load(folder, rank, model, optimizer, scheduler, objective)
    if rank == 0:
        log.info("[train] resumed from %s at step %d", checkpoint.path, progress.step)
    return progress


class Meter:
    """Times the stream and the steps of one logging window on this rank."""

    def __init__(self, plan: TrainPlan, rank: int, step: int):
        self.plan, self.rank = plan, rank
        self.window_start, self.window_step, self.wait = time.perf_counter(), step, 0.0
        self.tokens, self.batches = 0, 0

    def take(self, batches, count: int) -> list[dict[str, torch.Tensor]]:
        start, micro = time.perf_counter(), []
        for _ in range(count):
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(f"the stream of {self.plan.config.data.data} ended before step "
                                   f"{self.plan.total_steps}: too many images were skipped "
                                   f"(see the skipped-image count)")
            micro.append(batch)
            self.tokens += batch["text"].shape[1]
            self.batches += 1
        self.wait += time.perf_counter() - start
        return micro

    def window(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        seconds, steps = max(now - self.window_start, 1e-9), max(step - self.window_step, 1)
        out = {"images_per_s": steps * self.plan.config.global_batch / seconds,
               "data_wait": self.wait / seconds,
               "eta_s": (self.plan.total_steps - step) * seconds / steps,
               "text_tokens": self.tokens / max(self.batches, 1)}
        if torch.cuda.is_available():
            out["gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.window_start, self.window_step, self.wait = now, step, 0.0
        self.tokens, self.batches = 0, 0
        return out


def _equal_across_ranks(micro: list[dict], batches, meter: Meter, group) -> list[dict]:
    """With `decode=gpu` an image nvJPEG refuses is dropped on its rank only, but the gathered loss needs
    the same batch size on every rank: cut each micro-batch to the smallest across ranks, and replace
    (on every rank alike) any micro-batch that some rank has emptied. The sizes go through a CPU (gloo)
    `group`: a reduce on the GPU would make the host wait for the step still running there."""
    while True:
        sizes = [len(b["text"]) for b in micro]
        if group is not None:
            shared = torch.tensor(sizes, dtype=torch.int64)
            dist.all_reduce(shared, op=dist.ReduceOp.MIN, group=group)
            sizes = shared.tolist()
        if min(sizes) > 0:
            return [{k: v[:n] for k, v in b.items()} for b, n in zip(micro, sizes)]
        micro = [b for b, n in zip(micro, sizes) if n > 0] + meter.take(batches, sizes.count(0))


def _all_reduce(value: float, device: torch.device, op=dist.ReduceOp.SUM) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return float(tensor.item()) / (dist.get_world_size() if op == dist.ReduceOp.SUM else 1)


def _report(plan: TrainPlan, rank: int, device, state: tuple, progress: ckpt.Progress, meter: Meter, result,
            positions: list[torch.Tensor]) -> None:
    """Every rank at the same steps: metrics each `log_every` steps, a checkpoint each `every_steps` and at
    the last; `state` is (model, optimizer, scheduler, objective)."""
    model, optimizer, scheduler, objective = state
    step, c = progress.step, plan.config
    last = step == plan.total_steps
    save = last or step % c.checkpoint.every_steps == 0
    if not (save or step % c.schedule.log_every == 0):
        return
    metrics = {"step": step, "epoch": round(progress.epoch, 4),
               "loss": _all_reduce(result.loss, device), "lr": scheduler.get_last_lr()[0],
               **result.extras, "grad_norm": result.grad_norm, **meter.window(step)}
    if rank == 0:
        progress.history.append(metrics)
        log.info(progress_line(metrics, plan.total_steps))
        train_metrics.record(metrics, plan.run.uri.rstrip("/").rsplit("/", 1)[-1])
    if not save:
        ray.train.report(metrics)
        return
    position = min(int(p.min()) for p in positions)  # read here only: it waits for the device
    progress.position = int(_all_reduce(position, device, dist.ReduceOp.MIN))
    with tempfile.TemporaryDirectory() as folder:
        ckpt.save(folder, rank, unwrap(model), optimizer, scheduler, progress, objective)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=ckpt.dir_name(step))


def progress_line(m: dict, total: int) -> str:
    eta = int(m["eta_s"])
    return (f"[train] step {m['step']}/{total} | epoch {m['epoch']:.2f} | loss {m['loss']:.4f} | "
            f"lr {m['lr']:.2e} | {m['images_per_s']:,.0f} img/s | data wait {m['data_wait']:.0%} | "
            f"ETA {eta // 3600}h{eta % 3600 // 60:02d}m{eta % 60:02d}s"
            + (f" | GPU mem {m['gpu_mem_gib']:.1f} GiB" if "gpu_mem_gib" in m else ""))


def _maybe_fail(plan: TrainPlan, rank: int, step: int) -> None:
    faults = plan.config.faults
    if faults is None or rank != faults.rank or step != faults.kill_at_step:
        return
    marker = plan.run.join(f"_fault_injected_at_step_{step}")
    if storage.exists(marker):
        return
    storage.write_bytes(marker, b"killed once by faults.kill_at_step\n")
    _await_registration(plan, step)
    log.warning("[train] faults.kill_at_step=%d: killing rank %d (pid %d)", step, rank, os.getpid())
    os._exit(1)


def _await_registration(plan: TrainPlan, step: int, timeout_s: float = 60.0) -> None:
    """Wait until Ray Train has recorded the run's last checkpoint before `step`. Its controller takes a
    reported checkpoint in when it next polls the workers (every 2 s by default): a worker that dies
    before that loses the checkpoint, and the group restarts from the one before. The chaos test is of
    the restore, so it kills after the record; the race itself is Ray's (docs/training.md)."""
    every = plan.config.checkpoint.every_steps
    last = (step - 1) // every * every
    if last == 0:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = ckpt.latest_in_run(plan.run)
        if latest is not None and latest.uri.rstrip("/").endswith(ckpt.dir_name(last)):
            return
        time.sleep(0.2)
    log.warning("[train] faults: checkpoint %d not recorded by Ray Train after %.0f s; killing anyway",
                last, timeout_s)
