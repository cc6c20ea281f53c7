"""The serving benchmark: HTTP load against the real service, batched vs a naive one-at-a-time baseline.

Starts a local Ray Serve with the project's application (GPU model replica when there is a GPU), then
for each scenario drives it with client processes (`loadgen`: aiohttp, payloads base64-encoded in
advance) for `duration` seconds after a warm-up, and reports images/s, requests/s, latency percentiles,
the ingress's own timings (its Server-Timing header) and the host's CPU per image by role. The naive
baseline is the same model and HTTP path with batching off (max_batch_size 1) and one request in
flight. A model `arch:<name>` is exported randomly initialised first (speed does not depend on the
weights). `ingress` picks the HTTP front of the Ray it starts (HAProxy, as the service runs, or Ray
Serve's own proxy); the results name the front that answered.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np

from linnaeus.bench.loadgen import drive, http_front, payloads_for, server_breakdown


@dataclass(frozen=True)
class Scenario:
    name: str
    images_per_request: int
    concurrency: int
    max_batch_size: int
    batch_wait_s: float


SCENARIOS = {
    "single-c1": Scenario("single-c1", 1, 1, 256, 0.002),
    "naive-single-c1": Scenario("naive-single-c1", 1, 1, 1, 0.0),
    "single-c64": Scenario("single-c64", 1, 64, 256, 0.002),
    "batch32-c16": Scenario("batch32-c16", 32, 16, 256, 0.002),
    "batch32-c32": Scenario("batch32-c32", 32, 32, 256, 0.002),
    "naive-batch32-c1": Scenario("naive-batch32-c1", 32, 1, 1, 0.0),
    # no batch wait: a batch is whatever queued while the previous one ran
    "single-c1-nowait": Scenario("single-c1-nowait", 1, 1, 256, 0.0),
    "single-c64-nowait": Scenario("single-c64-nowait", 1, 64, 256, 0.0),
    "batch32-c16-nowait": Scenario("batch32-c16-nowait", 32, 16, 256, 0.0),
    "batch32-c32-nowait": Scenario("batch32-c32-nowait", 32, 32, 256, 0.0),
}
# The service's default batching is no wait (BatchingConfig); the 2 ms rows are kept for comparison.
DEFAULT_SCENARIOS = ["single-c1-nowait", "naive-single-c1", "single-c64-nowait", "batch32-c16-nowait",
                     "batch32-c32-nowait", "naive-batch32-c1"]


@dataclass(frozen=True)
class ServeBenchmark:
    model: str  # an export, or arch:<name> (exported randomly initialised)
    images: list[bytes]  # request payloads (JPEG bytes)
    output: Path
    scenarios: tuple[Scenario, ...]
    duration: float = 20.0
    warmup: float = 5.0
    ingress_replicas: int = 8
    client_processes: int = 4
    cuda_graphs: int = 256  # 0: eager model in the service
    model_only: bool = True  # also the Predictor alone, no HTTP
    ingress: str = "haproxy"  # or "proxy" (Ray Serve's)
    serve_env: list[tuple[str, str]] = field(default_factory=list)  # for the Ray processes started here


def summarise(window, images_per_request: int, duration: float) -> dict:
    """A scenario's row: rates from requests finished in the window, percentiles from those started in it."""
    lat = np.array(window.latencies) * 1000
    served = window.completed * images_per_request

    def pct(q):
        return round(float(np.percentile(lat, q)), 2) if len(lat) else None

    return {"requests": window.completed, "errors": window.errors,
            "requests_per_s": round(window.completed / duration, 1), "images_per_s": round(served / duration, 1),
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "server_p50_ms": server_breakdown(window.timings),
            "cpu_ms_per_image": {role: round(1000 * sec / served, 2) for role, sec in window.cpu.items()}
            if served else None}


def load_images(folder: str, limit: int) -> list[bytes]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
    if not paths:
        raise FileNotFoundError(f"no JPEGs under {folder}")
    return [p.read_bytes() for p in paths]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_model(spec: str, output: Path) -> str:
    if not spec.startswith("arch:"):
        return spec
    from linnaeus.clip.exports import export_model
    from linnaeus.clip.models import create_model

    target = output / "model"
    export_model(create_model(spec[len("arch:"):], seed=0), spec[len("arch:"):], str(target))
    return str(target)


def run_benchmark(opts: ServeBenchmark, build_app, log=print) -> dict:
    """Every scenario against a local Ray Serve running `build_app` (serve/app.py's); returns the results."""
    import ray
    from ray import serve

    from linnaeus.runtime import init_ray

    images = opts.images
    model = prepare_model(opts.model, opts.output)
    ceiling = {"eager": model_only(model, images, 0)} if opts.model_only else {}
    if opts.cuda_graphs and opts.model_only:
        ceiling["cuda_graphs"] = model_only(model, images, opts.cuda_graphs)
    log(json.dumps({"model_only": ceiling}))
    # behind HAProxy an ingress replica drains 30 s at shutdown for a load balancer's sake: none here
    ray_env = {"RAY_SERVE_ENABLE_HA_PROXY": "1" if opts.ingress == "haproxy" else "0",
               "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1", **dict(opts.serve_env)}
    # Serve reads its knobs when a process imports it: this driver imported Serve already, so they reach
    # only the processes the local Ray starts (proxy or HAProxy, controller, replicas); a Ray already
    # running or joined through RAY_ADDRESS keeps its own
    with mock.patch.dict(os.environ, ray_env):
        init_ray()
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    fixed = {"min_replicas": opts.ingress_replicas, "max_replicas": opts.ingress_replicas}
    base = {"model": model, "api_key_env": None, "ingress_cpus": 1, "ingress_autoscaling": fixed,
            "cuda_graphs": opts.cuda_graphs,
            "limits": {"max_images": 64}}
    url = f"http://127.0.0.1:{port}/v1/embed"
    rows = []
    serve.run(build_app(base), name="bench", route_prefix="/")  # once: a redeploy restarts every replica
    front = http_front(port)
    log(json.dumps({"http_front": front}))
    handle = serve.get_deployment_handle("ModelServer", app_name="bench")
    for sc in opts.scenarios:
        # What `serve deploy` does with a new user_config, called directly on the one model replica.
        handle.reconfigure.remote({"max_batch_size": sc.max_batch_size,
                                   "batch_wait_timeout_s": sc.batch_wait_s}).result()
        window = drive(url, payloads_for(images, sc.images_per_request), sc.concurrency,
                       min(opts.client_processes, sc.concurrency), opts.warmup, opts.duration)
        row = {**asdict(sc), **summarise(window, sc.images_per_request, opts.duration)}
        sizes = handle.batch_sizes.remote().result()
        row["mean_batch"] = round(float(np.mean(sizes)), 1) if sizes else None
        rows.append(row)
        log(json.dumps(row))
    env = {"gpu": _gpu_name(), "model_only": ceiling, "cpus": int(ray.cluster_resources().get("CPU", 0)),
           "model": opts.model, "payload_bytes_mean": int(np.mean([len(b) for b in images])),
           "duration_s": opts.duration, "ingress_replicas": opts.ingress_replicas, "cuda_graphs": opts.cuda_graphs,
           "http_front": front, "serve_env": opts.serve_env}
    serve.shutdown()
    return {"env": env, "scenarios": rows}


def model_only(model: str, images: list[bytes], cuda_graphs: int, seconds: float = 3.0) -> dict:
    """The Predictor alone, no HTTP: images/s of encode_pixels at a few batch sizes (decode excluded)."""
    import torch

    from linnaeus.images import decode_image
    from linnaeus.serving.predictor import Predictor

    predictor = Predictor(model, cuda_graphs=cuda_graphs)
    pixels = torch.stack([predictor.pixels(decode_image(b)) for b in images[:256]])
    out = {}
    for batch in (1, 32, 256):
        chunk = pixels[:batch]
        for _ in range(3):
            predictor.encode_pixels(chunk)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            predictor.encode_pixels(chunk)
            n += 1
        elapsed = time.perf_counter() - start
        out[f"batch{len(chunk)}"] = {"images_per_s": round(n * len(chunk) / elapsed, 1),
                                     "ms_per_batch": round(1000 * elapsed / n, 2)}
    del predictor
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def markdown(rows: list[dict], env: dict) -> str:
    lines = [f"{env['model']} on {env['gpu']}, {env['cpus']} CPUs, {env['ingress_replicas']} ingress replicas, "
             f"HTTP front {env.get('http_front', 'unknown')}, "
             f"mean payload image {env['payload_bytes_mean']:,} bytes; model only (no HTTP): {env['model_only']}",
             "", "| scenario | images/request | concurrency | max batch | images/s | requests/s | p50 ms | "
             "p90 ms | p99 ms | mean batch | errors | in the ingress, p50 ms | CPU ms per image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['images_per_request']} | {r['concurrency']} | {r['max_batch_size']} | "
                     f"{r['images_per_s']:,} | {r['requests_per_s']} | {r['p50_ms']} | {r['p90_ms']} | "
                     f"{r['p99_ms']} | {r['mean_batch']} | {r['errors']} | "
                     + " ".join(f"{k} {v}" for k, v in r["server_p50_ms"].items()) + " | "
                     + " ".join(f"{k} {v}" for k, v in (r["cpu_ms_per_image"] or {}).items()) + " |")
    return "\n".join(lines)
