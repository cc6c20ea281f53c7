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

from linnaeus import storage
from linnaeus.config import EvalConfig
from linnaeus.data import shards
from linnaeus.eval.embed import embed_images
from linnaeus.eval.evaluate import evaluate
from linnaeus.eval.modelref import build_model
from linnaeus.runtime import init_ray, setup_logging


def replicate(corpus: Path, copies: int, out: Path) -> int:
    """`out` becomes a corpus of `copies` x the single shard of `corpus` (symlinks); returns its rows."""
    manifest = shards.read_manifest(storage.resolve(corpus))
    if len(manifest.shards) != 1:
        raise SystemExit(f"{corpus}: needs a one-shard corpus, found {len(manifest.shards)} shards")
    entry, real = manifest.shards[0], (corpus / manifest.shards[0].path).resolve()
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(copies):
        link = out / f"copy-{i:05d}.parquet"
        if not link.is_symlink():
            link.symlink_to(real)
        entries.append(entry.model_copy(update={"path": link.name}))
    scaled = manifest.model_copy(update={"shards": entries, "rows": entry.rows * copies})
    (out / shards.MANIFEST_NAME).write_text(scaled.model_dump_json())
    return scaled.rows


def _headline(task: str, figures: dict) -> dict:
    if task == "zeroshot":
        return {k: figures.get(k) for k in ("classes", "images", "top1", "top5")}
    if task == "fewshot":
        return {k: v.get("mean") for k, v in figures.items()}
    if task == "retrieval":
        return {k: v for k, v in figures.items() if k.endswith("_r1") or k == "texts"}
    return {"images_sampled": figures["images_sampled"], "species": figures["species"]}


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
    model, arch = build_model(args.model)
    start = time.perf_counter()
    data = embed_images(str(args.output / "corpus"), args.model, model.visual.preprocess_cfg, args.actors,
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
        out[task] = _headline(task, results[task])
        print(json.dumps({task: out[task], "seconds": out[f"{task}_s"]}), flush=True)
    out["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
