"""The TorchTrainer for a plan: scaling, storage, failure handling, the stream, and the run's outputs.

Notable:
- The stream goes to Ray Train as a factory (`datasets={"train": StreamFactory}`): Ray Train calls it
  each time it (re)starts the worker group, and it plans the stream from the data position of the
  checkpoint Ray will hand the workers (read from Ray's run snapshot), so a restarted or resumed run
  neither replays the epoch from its start nor skips ahead.
- CPUs are shared out before anything starts: train workers take `cpus_per_worker` (fractions on small
  machines), readers take 0.5, and the preprocessing actors get what is left. A local cluster too
  small for that fails at once instead of hanging with Ray Data starved; a joined cluster only warns,
  since an autoscaler may add nodes.
- Checkpoints and the run snapshot live at `<storage_path>/<name>` (local or s3://); Ray Train keeps
  the last `checkpoint.keep`. Re-running a plan with the same name resumes it (Ray Train's own run
  restoration); `checkpoint.max_failures` restarts the worker group from the latest checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time

import ray
import ray.train
from ray.train.torch import TorchTrainer

from linnaeus import runs, runtime, storage
from linnaeus.config import ConfigError
from linnaeus.data.stream import READER_CPUS, build_stream, skip_counter
from linnaeus.train import checkpoint as ckpt
from linnaeus.train.loop import train_loop_per_worker
from linnaeus.train.outputs import write_outputs
from linnaeus.train.plan import TrainPlan, record_of

log = logging.getLogger(__name__)


class StreamFactory:
    """Plans the training stream from the run's latest checkpoint (called by Ray Train per start)."""

    def __init__(self, plan: TrainPlan, counter: ray.actor.ActorHandle):
        self.plan, self.counter, self.retries = plan, counter, storage.retry_listener()
        self.progress_bars = ray.data.DataContext.get_current().enable_progress_bars

    def __call__(self) -> ray.data.Dataset:
        # Called in Ray Train's controller actor, whose DataContext (and storage retry listener, for the
        # stream's filesystem made here) is not the driver's.
        ray.data.DataContext.get_current().enable_progress_bars = self.progress_bars
        storage.set_retry_listener(self.retries)
        latest = ckpt.latest_in_run(self.plan.run)
        progress = ckpt.read_progress(latest) if latest else ckpt.Progress()
        start_epoch, epochs = self.plan.stream_epochs(progress.position, progress.step)
        stream = build_stream(self.plan.config.data, epochs, start_epoch, start=progress.position,
                              counter=self.counter)
        log.info("stream for %s: from item %d (epoch %d), %d epoch(s) planned", self.plan.name,
                 progress.position, start_epoch, epochs)
        return stream.dataset


def share_cluster_cpus(plan: TrainPlan) -> TrainPlan:
    """`share_cpus` on the Ray cluster this process is connected to."""
    nodes = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0) or 1
    return share_cpus(plan, ray.cluster_resources(), joined=bool(os.environ.get("RAY_ADDRESS")), nodes=nodes)


def share_cpus(plan: TrainPlan, cluster: dict[str, float], joined: bool, nodes: int = 1) -> TrainPlan:
    """Fix `data.preprocess_workers` from the CPUs left after the train workers and readers. Reader CPUs
    are kept free once per node: the cluster's free CPUs are split across nodes, and a total that no
    single node holds runs no read task (the stream then stalls without an error)."""
    c, data = plan.config, plan.config.data
    train_cpus = c.scaling.workers * c.scaling.cpus_per_worker
    left = cluster.get("CPU", 0) - train_cpus - READER_CPUS * nodes
    problems = []
    if left < data.preprocess_cpus:
        problems.append(f"the cluster has {cluster.get('CPU', 0):g} CPUs on {nodes} node(s): {c.scaling.workers} "
                        f"train worker(s) x {c.scaling.cpus_per_worker:g} + {READER_CPUS:g} per node for the "
                        f"readers leave {left:g}, less than one preprocessing actor's {data.preprocess_cpus:g} "
                        f"(lower scaling.cpus_per_worker or data.preprocess_cpus)")
    if c.scaling.use_gpu and cluster.get("GPU", 0) < c.scaling.workers:
        problems.append(f"scaling.workers={c.scaling.workers} with use_gpu needs {c.scaling.workers} "
                        f"GPUs; the cluster has {cluster.get('GPU', 0):g}")
    if problems and not joined:
        raise ConfigError("; ".join(problems))
    for problem in problems:
        log.warning("%s; waiting for the cluster to grow", problem)
    workers = data.preprocess_workers or max(1, math.floor(left / data.preprocess_cpus))
    config = c.model_copy(update={"data": data.model_copy(update={"preprocess_workers": workers})})
    return TrainPlan(config, plan.name, plan.rows, plan.units, plan.total_steps)


def build_trainer(plan: TrainPlan, counter: ray.actor.ActorHandle | None) -> TorchTrainer:
    c = plan.config
    root = storage.resolve(c.checkpoint.storage_path, c.s3)
    resources = {"CPU": c.scaling.cpus_per_worker, **({"GPU": 1} if c.scaling.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan, "retries": storage.retry_listener()},
        scaling_config=ray.train.ScalingConfig(num_workers=c.scaling.workers, use_gpu=c.scaling.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=c.scaling.placement),
        run_config=ray.train.RunConfig(
            name=plan.name, storage_path=root.path, storage_filesystem=root.fs if root.is_s3 else None,
            failure_config=ray.train.FailureConfig(max_failures=c.checkpoint.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=c.checkpoint.keep),
            # Ray Train's INFO lines (one per report, per worker) would drown the progress lines.
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets={"train": StreamFactory(plan, counter)})


def fit(plan: TrainPlan, resume: bool = False) -> tuple[ray.train.Result, dict]:
    """Run training to the plan's last step; returns Ray's result and the skipped-image summary.
    A new run refuses a folder that already holds one: continuing a run is `resume=True`."""
    exists = runs.has_record(plan.run)
    if exists and not resume:
        raise ConfigError(f"{plan.run_uri} already holds a run: continue it with --resume {plan.run_uri}, "
                          "or pick another checkpoint.name")
    storage.ensure_bucket(plan.run)
    if not exists:
        runs.write_record(plan.run, record_of(plan))  # before the CPU share: a resume elsewhere works its own out
    plan = share_cluster_cpus(plan)
    counter = skip_counter()
    result = build_trainer(plan, counter).fit()
    return result, ray.get(counter.summary.remote())


def failure_cause(exc: Exception) -> str:
    """What actually went wrong: Ray's message starts with a generic line; the causes hang below it."""
    causes = getattr(exc, "worker_failures", None) or {}
    if causes:
        return "; ".join(f"rank {rank}: {_last_line(e)}" for rank, e in sorted(causes.items()))
    return _last_line(getattr(exc, "controller_failure", None) or exc)


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"


class TrainingFailed(RuntimeError):
    """The run stopped for good (failures beyond `checkpoint.max_failures`); its checkpoints remain."""


def run_training(plan: TrainPlan, resume: bool = False) -> dict:
    """Train to the last step, then export the model and write the run's metrics (returns the summary)."""
    with runtime.storage_retries() as retries:
        return _train(plan, resume, retries)


def _train(plan: TrainPlan, resume: bool, retries: runtime.StorageRetries) -> dict:
    start = time.time()
    try:
        result, skipped = fit(plan, resume)
    except ray.train.TrainingFailedError as exc:
        latest = ckpt.latest_in_run(plan.run)
        where = f"its latest checkpoint is {latest.uri}" if latest else "it has no checkpoint yet"
        raise TrainingFailed(f"{plan.run_uri}: training failed: {failure_cause(exc)}\n{where}. Continue it "
                             f"with: python jobs/train.py --resume {plan.run_uri}") from exc
    if result.checkpoint is None:
        raise RuntimeError(f"{plan.run_uri}: training ended without a checkpoint ({result.error})")
    uri = plan.run.join(os.path.basename(result.checkpoint.path.rstrip("/"))).uri
    with result.checkpoint.as_directory() as folder:
        return write_outputs(plan, folder, uri, skipped, time.time() - start, retries.report)
