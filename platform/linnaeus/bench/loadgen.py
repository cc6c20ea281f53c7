"""HTTP load for the serving benchmark: client processes, the service's own timings, CPU by role.

Notable:
- Clients are separate processes (aiohttp, one session per in-flight request, payloads encoded in
  advance), so the load generator's own Python does not share an interpreter with what it measures.
- The rate counts requests that finish inside the window; latencies are those of requests that start
  inside it, however late they finish (no survivors-only sample); errors are counted apart.
- `server_breakdown` turns each answer's `Server-Timing` header (ms spent inside the ingress replica)
  into medians, so a latency can be split into ingress work, the model round trip and the rest
  (proxy, HTTP, client).
- `CpuMeter` reads the CPU time of the benchmark's process tree over the measured window and sorts it
  into roles (HTTP proxy: Serve's proxy actor or HAProxy and its manager; ingress replicas, model
  replica, Ray's own daemons, clients, other): on a CPU-bound host, that says which part to make
  cheaper, per image served. `http_front` says which of the two proxies listens on the service's port.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import time
from dataclasses import dataclass

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
    # The HTTP front: Ray Serve's Python proxy actor, or HAProxy and the actor that manages it
    if any(name in line for name in ("ProxyActor", "HAProxyManager", "bin/haproxy")):
        return "proxy"
    if "ServeReplica:" in line:
        return "model" if ":ModelServer" in line else "ingress"
    if "ray::" in line or "/ray/" in line or any(name in line for name in ("raylet", "gcs_server")):
        return "ray"
    return "other"


class CpuMeter:
    """CPU seconds by role between `start()` and `stop()`, over this process and its descendants.

    A local Ray (raylet, GCS, the Serve replicas) and the client processes all descend from the
    benchmark's process, so another Ray on the same host is not counted. Processes are keyed by pid and
    start time (a reused pid is a new process); one that exits inside the window loses its CPU time.
    """

    def __init__(self, clients: set[int]):
        self.clients = clients
        self._before: dict[tuple[int, float], tuple[str, float]] = {}

    def _snapshot(self) -> dict[tuple[int, float], tuple[str, float]]:
        import psutil  # the `bench` extra (Ray also carries a copy, importable once Ray is)

        me = psutil.Process()
        out = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    times, key = proc.cpu_times(), (proc.pid, proc.create_time())
                    out[key] = (role_of(proc.cmdline(), self.clients, proc.pid), times.user + times.system)
            except psutil.Error:  # gone, or not ours to read
                continue
        return out

    def start(self) -> None:
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        used = dict.fromkeys(ROLES, 0.0)
        for key, (role, seconds) in self._snapshot().items():
            used[role] += seconds - self._before.get(key, (role, 0.0))[1]
        return used


@dataclass
class Window:
    """One scenario's measurement window."""

    latencies: list[float]  # s, of successful requests that started in the window (late finishers too)
    timings: list[dict[str, float]]  # their Server-Timing entries, ms
    completed: int  # successful requests that finished in the window: the rate's numerator
    errors: int  # failed requests that started in the window
    cpu: dict[str, float]  # CPU seconds by role over the window


def drive(url: str, payloads: list[bytes], concurrency: int, processes: int, warmup: float, duration: float,
          startup: float = 2.0) -> Window:
    """Closed-loop clients from now on; measured between now + startup + warmup and `duration` later.

    The window is fixed here, in the system-wide monotonic clock, for the clients and the CPU meter
    alike; `startup` covers the clients' own start (spawn, imports).
    """
    t_measure = time.monotonic() + startup + warmup
    t_end = t_measure + duration
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    procs = [ctx.Process(target=_client, args=(url, payloads, c, t_measure, t_end, queue)) for c in per if c]
    for p in procs:
        p.start()
    meter = CpuMeter({p.pid for p in procs})
    time.sleep(max(0.0, t_measure - time.monotonic()))
    meter.start()
    time.sleep(max(0.0, t_end - time.monotonic()))
    cpu = meter.stop()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return Window([x for r in results for x in r[0]], [x for r in results for x in r[1]],
                  sum(r[2] for r in results), sum(r[3] for r in results), cpu)


def _client(url: str, payloads: list[bytes], concurrency: int, t_measure: float, t_end: float, queue) -> None:
    import aiohttp

    async def run():
        latencies, timings, completed, errors = [], [], 0, 0

        async def worker(i: int):
            nonlocal completed, errors
            async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
                n = i
                while time.monotonic() < t_end:
                    t0, header = time.monotonic(), ""
                    try:
                        async with session.post(url, data=payloads[n % len(payloads)]) as r:
                            await r.read()
                            ok, header = r.status == 200, r.headers.get("server-timing", "")
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ok = False
                    t1 = time.monotonic()
                    n += concurrency
                    completed += ok and t_measure <= t1 <= t_end
                    if t0 >= t_measure:
                        errors += not ok
                        if ok:
                            latencies.append(t1 - t0)
                            timings.append(parse_server_timing(header))

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, timings, completed, errors

    queue.put(asyncio.run(run()))


def http_front(port: int, wait_s: float = 10.0) -> str:
    """What answers HTTP on `port` here: "haproxy", "proxy" (Ray Serve's proxy actor) or "unknown"
    (nothing found in `wait_s`: right after `serve.run`, HAProxy may still be starting)."""
    deadline = time.monotonic() + wait_s
    while (front := _listener(port)) == "unknown" and time.monotonic() < deadline:
        time.sleep(0.2)
    return front


def _listener(port: int) -> str:
    import psutil

    try:
        listening = [c.pid for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid]
        names = [" ".join(psutil.Process(pid).cmdline()) for pid in listening]
    except (psutil.Error, OSError):
        return "unknown"
    if any("haproxy" in name for name in names):
        return "haproxy"
    return "proxy" if any("ProxyActor" in name for name in names) else "unknown"
