"""Benchmark: stream throughput (decode + RandomResizedCrop + normalise + caption + tokenise).

Two figures on one corpus (default: `../shared/data/cub50`, ingested first if needed):
- one core, no Ray: the per-row work in a plain loop (the ceiling a Ray worker can reach per core);
- the Ray Data stream end to end on every CPU Ray has, consumed like a train worker (batches of
  --batch-size); reported as rows/s and rows/s per CPU.

    python jobs/benchmark_stream.py --input ../shared/data/cub50 --output out/bench [--epochs 3]
    python jobs/benchmark_stream.py --corpus .benchdata/cub50-1500 --decode gpu   # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from linnaeus import storage
from linnaeus.bench.stream import single_core, streamed
from linnaeus.config import IngestConfig, StreamConfig
from linnaeus.data import shards
from linnaeus.data.ingest import run_ingest
from linnaeus.runtime import init_ray


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default="../shared/data/cub50", help="folder-format images to ingest")
    p.add_argument("--output", default="out/bench")
    p.add_argument("--corpus", help="stream this existing corpus instead of ingesting --input")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--decode", choices=["cpu", "gpu", "hybrid"], default="cpu")
    p.add_argument("--preprocess-batch", type=int, default=64)
    args = p.parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).resolve() if args.corpus else out / "corpus"
    init_ray()
    if not (corpus / shards.MANIFEST_NAME).exists():
        run_ingest(IngestConfig(input=args.input, format="folder", output=str(corpus), shard_rows=512))
    cfg = StreamConfig(data=str(corpus), image_size=args.image_size, decode=args.decode,
                       preprocess_batch=args.preprocess_batch)
    # Warm the Ray workers (each imports torch and open_clip once, seconds apiece) as a long training
    # run would have; the measured stream below then reuses them.
    warmup = streamed(cfg, 1, args.batch_size, out / "ray_data_stats_warmup.txt")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    result = {"machine": f"{os.cpu_count()} CPUs, {gpu}", "corpus": str(corpus),
              "date": time.strftime("%Y-%m-%d"), "image_size": args.image_size,
              "decode": args.decode, "batch_size": args.batch_size,
              "preprocess_batch": args.preprocess_batch, "shards": len(shards.read_manifest(
                  storage.resolve(corpus)).shards), "epochs": args.epochs,
              "single_core_rows_per_s": round(single_core(corpus, cfg, 512), 1),
              "warmup": warmup,
              "stream_raw": streamed(cfg, args.epochs, args.batch_size, out / "ray_data_stats_raw.txt",
                                     consumer="raw"),
              "stream": streamed(cfg, args.epochs, args.batch_size, out / "ray_data_stats.txt")}
    (out / "stream.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
