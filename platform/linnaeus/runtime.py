"""Joining or starting Ray for a job: the embedded default, `RAY_ADDRESS`, or the `ray job` cluster.

Notable:
- With no address, a local Ray starts inside the job (the embedded default). Inside `ray job submit`
  (or with `RAY_ADDRESS` set), the job joins that cluster instead.
- Jobs log through `logging` at INFO; Ray's own driver-side chatter stays at WARNING.
"""

from __future__ import annotations

import logging
import os

import ray


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` / `RAY_ADDRESS`, or start a local Ray; a no-op when already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(os.environ.get("LINNAEUS_PROGRESS"))
