"""Benchmark: evaluation at scale. A corpus of N copies of one real shard (symlinks under a manifest that
lists every copy), embedded by the Ray Data actor pool and scored by every task; time and driver memory.

    python jobs/benchmark_eval.py --corpus .benchdata/cub50-1500 --copies 700 --output /tmp/bench-eval \
        --model arch:ViT-B-16
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

from linnaeus.bench.evaluation import headline, replicate
from linnaeus.config import EvalConfig
from linnaeus.eval.embed import embed_dataset
from linnaeus.eval.evaluate import evaluate
from linnaeus.eval.modelref import load_model
from linnaeus.runtime import init_ray, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--copies", type=int, default=100)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--model", default="arch:ViT-B-16")
    p.add_argument("--actors", type=int, help="model actors (default: 4 per GPU)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--embed-only", action="store_true", help="time the embedding, skip the scoring")
    p.add_argument("--stats", action="store_true", help="log Ray Data's per-operator stats")
    args = p.parse_args(argv)
    rows = replicate(args.corpus, args.copies, args.output / "corpus")
    setup_logging()
    if args.stats:
        logging.getLogger("linnaeus.eval.embed").setLevel(logging.DEBUG)
    init_ray()
    model, arch = load_model(args.model)
    start = time.perf_counter()
    data = embed_dataset(str(args.output / "corpus"), args.model, model.visual.preprocess_cfg, args.actors,
                        args.batch_size)
    embed_s = time.perf_counter() - start
    out = {"rows": rows, "embedded": len(data.taxa), "skipped": len(data.skipped), "actors": args.actors,
           "batch_size": args.batch_size, "embed_s": round(embed_s, 1),
           "embed_rows_per_s": round(len(data.taxa) / embed_s)}
    print(json.dumps(out), flush=True)
    for task in [] if args.embed_only else ["zeroshot", "fewshot", "retrieval", "hierarchy"]:
        cfg = EvalConfig(model=args.model, data=str(args.output / "corpus"), output=str(args.output / "eval"),
                         tasks=[task])
        start = time.perf_counter()
        results, _ = evaluate(model, arch, data, cfg)
        out[f"{task}_s"] = round(time.perf_counter() - start, 1)
        out[task] = headline(task, results[task])
        print(json.dumps({task: out[task], "seconds": out[f"{task}_s"]}), flush=True)
    out["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
