"""Training progress as Prometheus gauges (rank 0, every logged step), for dashboards and alerts.

Ray exports them on the node's metrics port as `ray_linnaeus_train_*`, tagged with the run name, next to
Ray's own (GPU utilisation, object store, ...). Gauges are created in the worker on first use, never
at import, and recording is a no-op cost next to a training step.
"""

from __future__ import annotations

import functools

_FIELDS = {"linnaeus_train_step": "step", "linnaeus_train_loss": "loss",
           "linnaeus_train_images_per_s": "images_per_s", "linnaeus_train_data_wait": "data_wait",
           "linnaeus_train_lr": "lr"}


def exported_names() -> set[str]:
    return {f"ray_{name}" for name in _FIELDS}  # all gauges: no suffix


@functools.cache
def _gauges() -> dict:
    from ray.util import metrics

    return {name: metrics.Gauge(name, f"training {field} (rank 0, logged steps)", tag_keys=("run",))
            for name, field in _FIELDS.items()}


def record(values: dict, run: str) -> None:
    for name, gauge in _gauges().items():
        gauge.set(float(values[_FIELDS[name]]), tags={"run": run})
