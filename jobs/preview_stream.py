"""Stream a few training batches from a corpus and print what the model would see.

    python jobs/preview_stream.py --data out/cub50 --batches 2 --batch-size 8 [--set mixing=per_batch]
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.config import ConfigError, StreamConfig, apply_overrides, validate
from linnaeus.data.loader import preview
from linnaeus.data.shards import CorpusError
from linnaeus.data.stream import build_stream
from linnaeus.runtime import init_ray, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="corpus folder or s3:// URI")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="StreamConfig override, e.g. --set image_size=96 --set mixing=per_batch")
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = validate(StreamConfig, apply_overrides({"data": args.data}, args.set), "--set")
        init_ray()
        stream = build_stream(cfg)
    except (ConfigError, CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"corpus {cfg.data}: {stream.manifest.rows} rows in {len(stream.manifest.shards)} shard(s), "
          f"{stream.manifest.taxa} taxa; text types {[t.value for t in cfg.text_types]} "
          f"mixed {cfg.mixing.value}")
    for line in preview(stream.dataset.iterator(), cfg, args.batches, args.batch_size):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
