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

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from linnaeus import storage
from linnaeus.config import IngestConfig, StreamConfig
from linnaeus.data import shards
from linnaeus.data.images import decode_rgb
from linnaeus.data.ingest import run_ingest
from linnaeus.data.loader import iter_train_batches
from linnaeus.data.stream import build_stream, tokenizer, train_transform
from linnaeus.runtime import init_ray
from linnaeus.taxonomy import RANKS, Taxon, TextSampler


def single_core(corpus: Path, cfg: StreamConfig, rows: int) -> float:
    """Rows/s of the per-row work in one process (no Ray, no batching overheads)."""
    manifest = shards.read_manifest(storage.resolve(corpus))
    table = pa.concat_tables([pq.read_table(corpus / e.path) for e in manifest.shards]).slice(0, rows)
    cols = table.to_pydict()
    transform, tok = train_transform(cfg.image_size, tuple(cfg.crop_scale)), tokenizer(cfg.model, 77)
    sampler = TextSampler(cfg.text_types, cfg.mixing, cfg.seed)
    start = time.perf_counter()
    for i in range(table.num_rows):
        transform(decode_rgb(cols["image"][i]))
        taxon = Taxon(*(cols[r][i] for r in RANKS), common_name=cols["common_name"][i])
        tok(sampler.captions([taxon], [cols["image_id"][i]]))
    return table.num_rows / (time.perf_counter() - start)


def streamed(cfg: StreamConfig, epochs: int, batch_size: int) -> dict:
    stream = build_stream(cfg, epochs=epochs)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where a trainer would take the batches
    start, first, rows, first_rows = time.perf_counter(), None, 0, 0
    for batch in iter_train_batches(stream.dataset.iterator(), cfg, batch_size, device=device,
                                    drop_last=False):
        rows += len(batch["sample_key"])
        if first is None:  # worker start-up (imports torch/open_clip) is paid once per run
            first, first_rows = time.perf_counter() - start, rows
    seconds = time.perf_counter() - start
    steady = (rows - first_rows) / max(1e-9, seconds - first)
    cpus = ray.cluster_resources().get("CPU", 1)
    return {"rows": rows, "seconds": round(seconds, 2), "first_batch_s": round(first or 0, 2),
            "rows_per_s": round(rows / seconds, 1), "cpus": cpus,
            "steady_rows_per_s": round(steady, 1), "steady_rows_per_s_per_cpu": round(steady / cpus, 1),
            "skipped": stream.skipped()["skipped"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default="../shared/data/cub50", help="folder-format images to ingest")
    p.add_argument("--output", default="out/bench")
    p.add_argument("--corpus", help="stream this existing corpus instead of ingesting --input")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--decode", choices=["cpu", "gpu"], default="cpu")
    args = p.parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).resolve() if args.corpus else out / "corpus"
    init_ray()
    if not (corpus / shards.MANIFEST_NAME).exists():
        run_ingest(IngestConfig(input=args.input, format="folder", output=str(corpus), shard_rows=512))
    cfg = StreamConfig(data=str(corpus), image_size=args.image_size, decode=args.decode)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    result = {"machine": f"{os.cpu_count()} CPUs, {gpu}", "corpus": str(corpus),
              "date": time.strftime("%Y-%m-%d"), "image_size": args.image_size,
              "decode": args.decode, "batch_size": args.batch_size, "epochs": args.epochs,
              "single_core_rows_per_s": round(single_core(corpus, cfg, 512), 1),
              "stream": streamed(cfg, args.epochs, args.batch_size)}
    (out / "stream.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
