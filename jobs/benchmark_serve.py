"""Serving benchmark: HTTP load against the real service, batched vs a naive one-at-a-time baseline.

    python jobs/benchmark_serve.py --model arch:ViT-B-16 --images photos/ --output out/bench-serve

Starts a local Ray Serve with the project's application (GPU model replica when there is a GPU), then
for each scenario drives it with client processes (aiohttp, payloads base64-encoded in advance) for
--duration seconds after a warm-up, and reports images/s, requests/s and latency percentiles. The
naive baseline is the same model and HTTP path with batching off (max_batch_size 1) and one request
in flight. `--model arch:<name>` exports a randomly initialised model first (speed does not depend on
the weights). Writes results.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


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
}
DEFAULT_SCENARIOS = ["single-c1", "naive-single-c1", "single-c64", "batch32-c16", "batch32-c32", "naive-batch32-c1"]


def _client(url: str, payloads: list[bytes], concurrency: int, warmup: float, duration: float, queue) -> None:
    import aiohttp

    async def run():
        latencies, errors = [], 0
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + duration

        async def worker(i: int):
            nonlocal errors
            async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
                n = i
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    try:
                        async with session.post(url, data=payloads[n % len(payloads)]) as r:
                            await r.read()
                            ok = r.status == 200
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ok = False
                    t1 = time.perf_counter()
                    n += concurrency
                    if t0 >= t_measure and t1 <= t_end:
                        latencies.append(t1 - t0) if ok else None
                        errors += not ok

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, errors

    queue.put(asyncio.run(run()))


def drive(url: str, payloads: list[bytes], concurrency: int, processes: int, warmup: float,
          duration: float) -> tuple[list[float], int]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    procs = [ctx.Process(target=_client, args=(url, payloads, c, warmup, duration, queue)) for c in per if c]
    for p in procs:
        p.start()
    results = [queue.get(timeout=warmup + duration + 120) for _ in procs]
    for p in procs:
        p.join()
    return [lat for r in results for lat in r[0]], sum(r[1] for r in results)


def load_images(folder: str, limit: int) -> list[bytes]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
    if not paths:
        raise SystemExit(f"error: no JPEGs under {folder}")
    return [p.read_bytes() for p in paths]


def payloads_for(images: list[bytes], per_request: int, count: int = 64) -> list[bytes]:
    encoded = [base64.b64encode(b).decode() for b in images]
    out = []
    for i in range(count):
        chosen = [encoded[(i * per_request + j) % len(encoded)] for j in range(per_request)]
        out.append(json.dumps({"images": chosen}).encode())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_model(spec: str, output: Path) -> str:
    if not spec.startswith("arch:"):
        return spec
    from linnaeus.models import create_model, export_model

    target = output / "model"
    export_model(create_model(spec[len("arch:"):], seed=0), spec[len("arch:"):], str(target))
    return str(target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="arch:ViT-B-16")
    p.add_argument("--images", required=True, help="folder of JPEG photos used as request payloads")
    p.add_argument("--output", default="out/bench-serve")
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=f"any of {', '.join(SCENARIOS)}")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--ingress-replicas", type=int, default=8)
    p.add_argument("--client-processes", type=int, default=4)
    p.add_argument("--cuda-graphs", type=int, default=256, help="0: eager model in the service")
    args = p.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    images = load_images(args.images, 512)

    import ray
    from ray import serve

    from linnaeus.runtime import init_ray
    from serve.app import build_app

    model = prepare_model(args.model, output)
    ceiling = {"eager": model_only(model, images, 0)}
    if args.cuda_graphs:
        ceiling["cuda_graphs"] = model_only(model, images, args.cuda_graphs)
    print(json.dumps({"model_only": ceiling}), flush=True)
    init_ray()
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    fixed = {"min_replicas": args.ingress_replicas, "max_replicas": args.ingress_replicas}
    base = {"model": model, "api_key_env": None, "ingress_cpus": 1, "ingress_autoscaling": fixed,
            "cuda_graphs": args.cuda_graphs,
            "limits": {"max_images": 64}}
    url = f"http://127.0.0.1:{port}/v1/embed"
    rows = []
    serve.run(build_app(base), name="bench", route_prefix="/")  # once: a redeploy restarts every replica
    handle = serve.get_deployment_handle("ModelServer", app_name="bench")
    for sc in scenarios:
        # What `serve deploy` does with a new user_config, called directly on the one model replica.
        handle.reconfigure.remote({"max_batch_size": sc.max_batch_size,
                                   "batch_wait_timeout_s": sc.batch_wait_s}).result()
        latencies, errors = drive(url, payloads_for(images, sc.images_per_request), sc.concurrency,
                                  min(args.client_processes, sc.concurrency), args.warmup, args.duration)
        lat = np.array(latencies) * 1000
        row = {**asdict(sc), "requests": len(lat), "errors": errors,
               "requests_per_s": round(len(lat) / args.duration, 1),
               "images_per_s": round(len(lat) * sc.images_per_request / args.duration, 1),
               "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
               "p90_ms": round(float(np.percentile(lat, 90)), 2) if len(lat) else None,
               "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}
        sizes = handle.batch_sizes.remote().result()
        row["mean_batch"] = round(float(np.mean(sizes)), 1) if sizes else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    env = {"gpu": _gpu_name(), "model_only": ceiling, "cpus": int(ray.cluster_resources().get("CPU", 0)),
           "model": args.model, "payload_bytes_mean": int(np.mean([len(b) for b in images])),
           "duration_s": args.duration, "ingress_replicas": args.ingress_replicas, "cuda_graphs": args.cuda_graphs}
    (output / "results.json").write_text(json.dumps({"env": env, "scenarios": rows}, indent=1))
    print(markdown(rows, env))
    serve.shutdown()
    return 0


def model_only(model: str, images: list[bytes], cuda_graphs: int, seconds: float = 3.0) -> dict:
    """The Predictor alone, no HTTP: images/s of encode_pixels at a few batch sizes (decode excluded)."""
    import torch

    from linnaeus.serving.images import decode_image
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
             f"mean payload image {env['payload_bytes_mean']:,} bytes; model only (no HTTP): {env['model_only']}",
             "", "| scenario | images/request | concurrency | max batch | images/s | requests/s | p50 ms | "
             "p90 ms | p99 ms | mean batch | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['images_per_request']} | {r['concurrency']} | {r['max_batch_size']} | "
                     f"{r['images_per_s']:,} | {r['requests_per_s']} | {r['p50_ms']} | {r['p90_ms']} | "
                     f"{r['p99_ms']} | {r['mean_batch']} | {r['errors']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
