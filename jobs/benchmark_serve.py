"""Serving benchmark: HTTP load against the real service, batched vs a naive one-at-a-time baseline.

    python jobs/benchmark_serve.py --model arch:ViT-B-16 --images photos/ --output out/bench-serve

What runs and how it is counted: linnaeus.bench.serving. Writes results.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from linnaeus.bench.serving import DEFAULT_SCENARIOS, SCENARIOS, ServeBenchmark, load_images, markdown, run_benchmark


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    p.add_argument("--no-model-only", action="store_true", help="skip the model-only (no HTTP) figures")
    p.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy",
                   help="HTTP front of a Ray started here: HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1, as `make serve` "
                        "and the infra files run it) or Ray Serve's Python proxy; a joined cluster keeps its own")
    p.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                   help="environment for the Ray processes started here (Ray Serve's RAY_SERVE_* knobs); "
                        "the driver keeps its own")
    args = p.parse_args(argv)
    if args.serve_env and os.environ.get("RAY_ADDRESS"):
        p.error("--serve-env reaches only a Ray this script starts; unset RAY_ADDRESS")
    unknown = [name for name in args.scenarios.split(",") if name not in SCENARIOS]
    if unknown:
        p.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        images = load_images(args.images, 512)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from serve.app import build_app

    opts = ServeBenchmark(args.model, images, output, tuple(SCENARIOS[n] for n in args.scenarios.split(",")),
                          args.duration, args.warmup, args.ingress_replicas, args.client_processes,
                          args.cuda_graphs, not args.no_model_only, args.ingress, args.serve_env)
    results = run_benchmark(opts, build_app, log=lambda line: print(line, flush=True))
    (output / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results["scenarios"], results["env"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
