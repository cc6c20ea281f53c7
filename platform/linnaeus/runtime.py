"""Joining or starting Ray for a job: the embedded default, `RAY_ADDRESS`, or the `ray job` cluster.

Notable:
- With no address, a local Ray starts inside the job (the embedded default). Inside `ray job submit`
  (or with `RAY_ADDRESS` set), the job joins that cluster instead.
- Jobs log through the `linnaeus` loggers at INFO; everything else (Ray, open_clip) at WARNING.
"""

from __future__ import annotations

import logging
import os

import ray


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
