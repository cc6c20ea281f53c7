"""Ingest images with taxonomy into a Linnaeus corpus (Parquet shards + manifest + report).

    python jobs/ingest.py --input ../shared/data/cub50 --format folder --output out/cub50
    python jobs/ingest.py --input s3://raw/tol --format webdataset --output s3://corpora/tol --resize 224
    python jobs/ingest.py --config ingest.yaml --set resize=256

Settings: linnaeus.config.IngestConfig, from --config FILE, the flags below and --set key=value (later
wins). Bad settings or inputs exit 2 naming the field or file, before any cluster work.
"""

from __future__ import annotations

import argparse
import json
import sys

from linnaeus.config import ConfigError, IngestConfig, InputFormat
from linnaeus.config.cli import Flag, add_config_arguments, config_from_args
from linnaeus.data.ingest import plan_ingest, run_ingest
from linnaeus.data.inputs import InputError
from linnaeus.runtime import init_ray, setup_logging, storage_retries
from linnaeus.storage import StorageError

FLAGS = (
    Flag("--input", "input", "folder, CSV file, or tar folder/prefix (path or URI)"),
    Flag("--format", "format", "input format", choices=tuple(f.value for f in InputFormat)),
    Flag("--output", "output", "corpus folder or s3://bucket/prefix"),
    Flag("--resize", "resize", "resize the shorter side to PX (never upsamples)", int),
    Flag("--shard-rows", "shard_rows", "rows per shard (default: ~384 MB per shard)", int),
    Flag("--max-pixels", "max_pixels", "refuse images with more pixels than this", int),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS)
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(IngestConfig, args, FLAGS, "jobs/ingest.py")
        with storage_retries():  # the planning reads' retries count too
            plan = plan_ingest(cfg)  # bad inputs fail here, before any cluster work
            init_ray()
            result = run_ingest(cfg, plan)
    except (ConfigError, InputError, StorageError) as exc:
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
