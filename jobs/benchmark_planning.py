"""Benchmark: planning a stream over a 100M-image corpus in 100k shards (a generated manifest).

Measures what the driver pays before the first row is read: reading `_manifest.json` and building the
Ray Data plan (`build_stream`), in seconds and driver RSS. Goal (foundation issue): <= 30 s, <= 2 GB.

    python jobs/benchmark_planning.py --output out/bench-planning [--shards 100000 --rows-per-shard 1000]
        [--first-batch]   # every entry becomes a readable shard; also time the first batch
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from linnaeus import storage
from linnaeus.bench.planning import link_shards, rss_mb, write_manifest
from linnaeus.config import StreamConfig
from linnaeus.data import shards
from linnaeus.data.stream import build_stream
from linnaeus.runtime import init_ray


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="out/bench-planning")
    p.add_argument("--shards", type=int, default=100_000)
    p.add_argument("--rows-per-shard", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--first-batch", action="store_true",
                   help="also hard-link a real 64-row shard under every name and time the first batch")
    args = p.parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, args.shards, args.rows_per_shard)
    init_ray()
    if args.first_batch:
        link_shards(out, args.shards)
    before = rss_mb()
    start = time.perf_counter()
    manifest = shards.read_manifest(storage.resolve(out))
    read_s = time.perf_counter() - start
    stream = build_stream(StreamConfig(data=str(out)), epochs=args.epochs)
    plan_s = time.perf_counter() - start
    first_batch_s = None
    if args.first_batch:
        next(iter(stream.dataset.iter_batches(batch_size=32, batch_format="numpy")))
        first_batch_s = round(time.perf_counter() - start, 2)
    result = {
        "shards": args.shards, "rows": manifest.rows, "epochs": args.epochs,
        "manifest_mb": round(os.path.getsize(out / shards.MANIFEST_NAME) / 2**20, 1),
        "read_manifest_s": round(read_s, 2), "plan_total_s": round(plan_s, 2),
        "first_batch_s": first_batch_s,
        "driver_rss_before_mb": round(before), "driver_rss_after_mb": round(rss_mb()),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dataset": str(stream.dataset),
        "goal": "plan_total_s <= 30 and driver_peak_rss_mb <= 2048",
    }
    result["goal_met"] = result["plan_total_s"] <= 30 and result["driver_peak_rss_mb"] <= 2048
    (out / "planning.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
