"""Joining or starting Ray for a job: the embedded default, `RAY_ADDRESS`, or the `ray job` cluster.

Notable:
- With no address, a local Ray starts inside the job (the embedded default). Inside `ray job submit`
  (or with `RAY_ADDRESS` set), the job joins that cluster instead.
- Jobs log through the `linnaeus` loggers at INFO; everything else (Ray, open_clip) at WARNING.
- `storage_retries()` counts a job's S3 retries across all its processes, for its report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from typing import Iterator

import ray

from linnaeus import storage


def setup_logging(level: int = logging.INFO) -> None:
    # Libraries that log on the root logger (open_clip narrates every model build at INFO) stay at
    # WARNING; the project's own loggers speak at `level`.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("linnaeus").setLevel(level)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` / `RAY_ADDRESS`, or start a local Ray; a no-op when already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # The local cluster starts its dashboard: Ray Train's placement-group cleaner asks the state API
    # (served by the dashboard) whether the run's controller is alive, and warns every few seconds
    # without it. It listens on 127.0.0.1 only.
    kwargs = {} if address else {"num_cpus": num_cpus, "include_dashboard": True, "dashboard_host": "127.0.0.1"}
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(os.environ.get("LINNAEUS_PROGRESS"))


_PROCESS = uuid.uuid4().hex  # this process, on any host (pids repeat across nodes)
_local: dict[str, dict[str, int]] = {}  # tally id -> counts made in this process (the driver's)
_local_lock = threading.Lock()
log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _RetryTally:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, operation: str, retries: int) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + retries

    def get(self) -> dict[str, int]:
        return dict(self.counts)


class StorageRetries:
    """A storage retry listener for one job. In the process that made it (the driver) it counts in
    memory, so it works before Ray is up (planning reads); pickled to another process (Ray Data tasks,
    Ray Train's workers and controller) it adds to an actor on the head node, made when first needed."""

    def __init__(self, actor: ray.actor.ActorHandle | None = None, home: str | None = None,
                 tally_id: str | None = None):
        self.actor, self.home, self.id = actor, home or _PROCESS, tally_id or uuid.uuid4().hex
        self._lock = threading.Lock()

    def __call__(self, operation: str, retries: int) -> None:
        if self.home == _PROCESS:  # every copy in the driver adds to the same counts
            with _local_lock:
                counts = _local.setdefault(self.id, {})
                counts[operation] = counts.get(operation, 0) + retries
        elif self.actor is not None:
            # waited for: the count is in before the request that needed it goes on, so a job that
            # ends reads every retry it had
            ray.get(self.actor.add.remote(operation, retries), timeout=30)

    def __reduce__(self):
        with self._lock:
            # an actor dies with its node: the head lives as long as the cluster. Never made without a
            # Ray to join (a copy made before Ray starts stays in this process, where it needs none).
            if self.actor is None and ray.is_initialized():
                self.actor = _RetryTally.options(resources={"node:__internal_head__": 0.001}).remote()
        return StorageRetries, (self.actor, self.home, self.id)

    def report(self) -> dict:
        """{"requests": retried requests in all, "by_operation": {operation: count}}; with
        "complete": false when the other processes' count could not be read."""
        with _local_lock:
            counts = dict(_local.get(self.id, {}))
        complete = True
        if self.actor is not None:
            try:
                remote = ray.get(self.actor.get.remote(), timeout=30)
            except Exception as exc:  # the count must not fail the job it describes
                log.warning("storage retries of other processes unavailable: %s", exc)
                remote, complete = {}, False
            for operation, n in remote.items():
                counts[operation] = counts.get(operation, 0) + n
        out = {"requests": sum(counts.values()), "by_operation": dict(sorted(counts.items()))}
        return out if complete else {**out, "complete": False}

    def close(self) -> None:
        with _local_lock:
            _local.pop(self.id, None)
        if self.actor is not None and ray.is_initialized():
            ray.kill(self.actor)


@contextlib.contextmanager
def storage_retries() -> Iterator[StorageRetries]:
    """Count the S3 retries of every filesystem created inside the block (linnaeus.storage.s3), in any
    process it travels to. Nested blocks share the outer count: a job wraps all its work, and the library
    call inside that reports the count reports all of it."""
    current = storage.retry_listener()
    if isinstance(current, StorageRetries):
        yield current
        return
    tally = StorageRetries()
    previous = storage.set_retry_listener(tally)
    try:
        yield tally
    finally:
        storage.set_retry_listener(previous)
        tally.close()
