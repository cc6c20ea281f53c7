"""HTTP load for the serving benchmark: client processes, the service's own timings, CPU by role.

Notable:
- Clients are separate processes (aiohttp, one session per in-flight request, payloads encoded in
  advance), so the load generator's own Python does not share an interpreter with what it measures.
- Only requests that start after the warm-up and finish before the end count; errors are counted apart.
- `server_breakdown` turns each answer's `Server-Timing` header (ms spent inside the ingress replica)
  into medians, so a latency can be split into ingress work, the model round trip and the rest
  (proxy, HTTP, client).
- `CpuMeter` reads the CPU time of every process on the host over the measured window and sorts it
  into roles (HTTP proxy, ingress replicas, model replica, Ray's own daemons, clients, other): on a
  CPU-bound host, that says which part to make cheaper, per image served.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import threading
import time

import numpy as np

from linnaeus.serving.timing import parse_server_timing

ROLES = ("proxy", "ingress", "model", "ray", "clients", "other")


def payloads_for(images: list[bytes], per_request: int, count: int = 64) -> list[bytes]:
    """JSON bodies for /v1/embed, `per_request` base64 images each, cycling through `images`."""
    encoded = [base64.b64encode(b).decode() for b in images]
    out = []
    for i in range(count):
        chosen = [encoded[(i * per_request + j) % len(encoded)] for j in range(per_request)]
        out.append(json.dumps({"images": chosen}).encode())
    return out


def server_breakdown(timings: list[dict[str, float]]) -> dict[str, float]:
    """Median ms per Server-Timing entry over the measured requests (0 where a request lacks one)."""
    names = sorted({name for t in timings for name in t})
    return {name: round(float(np.median([t.get(name, 0.0) for t in timings])), 2) for name in names}


def role_of(cmdline: list[str], clients: set[int], pid: int) -> str:
    """Which part of the serving path a process is, from its command line (Ray sets actor titles)."""
    if pid in clients:
        return "clients"
    line = " ".join(cmdline)
    if "ProxyActor" in line:
        return "proxy"
    if "ServeReplica:" in line:
        return "model" if ":ModelServer" in line else "ingress"
    if any(name in line for name in ("raylet", "gcs_server", "ServeController", "dashboard", "log_monitor",
                                     "ray::", "default_worker.py")):
        return "ray"
    return "other"


class CpuMeter:
    """CPU seconds by role between `start()` and `stop()`, from every process visible on the host."""

    def __init__(self):
        self.clients: set[int] = set()
        self._before: dict[int, tuple[str, float]] = {}

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        import psutil  # the `bench` extra (Ray also carries a copy, importable once Ray is)

        out = {}
        for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            info = proc.info
            times = info.get("cpu_times")
            if times is None:
                continue
            out[info["pid"]] = (role_of(info.get("cmdline") or [], self.clients, info["pid"]),
                                times.user + times.system)
        return out

    def start(self) -> None:
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after, used = self._snapshot(), dict.fromkeys(ROLES, 0.0)
        for pid, (role, seconds) in after.items():
            used[role] += seconds - self._before.get(pid, (role, 0.0))[1]
        return used


def drive(url: str, payloads: list[bytes], concurrency: int, processes: int, warmup: float, duration: float,
          meter: CpuMeter | None = None) -> tuple[list[float], int, list[dict[str, float]], dict | None]:
    """Latencies (s), errors, Server-Timing dicts and CPU seconds by role over the measured window."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    procs = [ctx.Process(target=_client, args=(url, payloads, c, warmup, duration, queue)) for c in per if c]
    for p in procs:
        p.start()
    cpu: dict = {}
    timer = None
    if meter is not None:
        meter.clients = {p.pid for p in procs}
        timer = threading.Thread(target=_measure_window, args=(meter, warmup, duration, cpu), daemon=True)
        timer.start()
    results = [queue.get(timeout=warmup + duration + 120) for _ in procs]
    for p in procs:
        p.join()
    if timer is not None:
        timer.join()
    return ([lat for r in results for lat in r[0]], sum(r[1] for r in results),
            [t for r in results for t in r[2]], cpu or None)


def _measure_window(meter: CpuMeter, warmup: float, duration: float, out: dict) -> None:
    time.sleep(warmup)
    meter.start()
    time.sleep(duration)
    out.update(meter.stop())


def _client(url: str, payloads: list[bytes], concurrency: int, warmup: float, duration: float, queue) -> None:
    import aiohttp

    async def run():
        latencies, errors, timings = [], 0, []
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + duration

        async def worker(i: int):
            nonlocal errors
            async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
                n = i
                while time.perf_counter() < t_end:
                    t0, header = time.perf_counter(), ""
                    try:
                        async with session.post(url, data=payloads[n % len(payloads)]) as r:
                            await r.read()
                            ok, header = r.status == 200, r.headers.get("server-timing", "")
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ok = False
                    t1 = time.perf_counter()
                    n += concurrency
                    if t0 >= t_measure and t1 <= t_end:
                        if ok:
                            latencies.append(t1 - t0)
                            timings.append(parse_server_timing(header))
                        errors += not ok

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, errors, timings

    queue.put(asyncio.run(run()))
