"""Ingest images with taxonomy into a Linnaeus corpus (Parquet shards + manifest + report).

    python jobs/ingest.py --input ../shared/data/cub50 --format folder --output out/cub50
    python jobs/ingest.py --input s3://raw/tol --format webdataset --output s3://corpora/tol --resize 224
"""

from __future__ import annotations

import argparse
import json
import sys

from linnaeus.config import ConfigError, IngestConfig, validate
from linnaeus.data.ingest import plan_ingest, run_ingest
from linnaeus.data.sources import InputFormat, SourceError
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder, CSV file, or tar folder/prefix (path or URI)")
    p.add_argument("--format", required=True, choices=[f.value for f in InputFormat])
    p.add_argument("--output", required=True, help="corpus folder or s3://bucket/prefix")
    p.add_argument("--resize", type=int, help="resize the shorter side to PX (never upsamples)")
    p.add_argument("--shard-rows", type=int, help="rows per shard (default: ~384 MB per shard)")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    raw = {"input": args.input, "format": args.format, "output": args.output,
           "resize": args.resize, "shard_rows": args.shard_rows}
    if args.max_pixels:
        raw["max_pixels"] = args.max_pixels
    try:
        cfg = validate(IngestConfig, raw, "jobs/ingest.py")
        plan = plan_ingest(cfg)  # bad inputs fail here, before any cluster work
        init_ray()
        result = run_ingest(cfg, plan)
    except (ConfigError, SourceError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.model_dump(), indent=1))
    if result.rows == 0:
        print(f"error: no image could be ingested; see {cfg.output}/_report.json", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"note: {result.skipped} input(s) skipped; see {cfg.output}/_report.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
