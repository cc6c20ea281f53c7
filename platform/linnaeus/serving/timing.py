"""Where a request's time went, as the W3C `Server-Timing` header: written by the ingress, read by clients.

Durations are kept in seconds while a request runs and written in milliseconds ("decode;dur=1.20");
a reader ignores entries without a duration, as browsers do.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float], name: str):
    """Adds the block's wall time (s) to timings[name]; repeated names add up."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def server_timing(timings: dict[str, float]) -> str:
    """{"decode": 0.0012, ...} seconds -> 'decode;dur=1.20, ...'."""
    return ", ".join(f"{name};dur={1000 * seconds:.2f}" for name, seconds in timings.items())


def parse_server_timing(header: str) -> dict[str, float]:
    """'decode;dur=1.20, model;dur=3.40' -> {"decode": 1.2, "model": 3.4} (ms); entries without a
    readable duration are skipped."""
    out = {}
    for entry in header.split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.lower() == "dur":
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out
