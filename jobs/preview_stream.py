"""Stream a few training batches from a corpus and print what the model would see.

    python jobs/preview_stream.py --data out/cub50 --batches 2 --batch-size 8 [--set mixing=per_batch]

Settings: linnaeus.config.StreamConfig, from --config FILE, --data and --set key=value (later wins).
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.config import ConfigError, StreamConfig
from linnaeus.config.cli import Flag, add_config_arguments, config_from_args
from linnaeus.data.loader import preview
from linnaeus.data.shards import CorpusError
from linnaeus.data.stream import build_stream
from linnaeus.runtime import init_ray, setup_logging

FLAGS = (Flag("--data", "data", "corpus folder or s3:// URI"),)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(StreamConfig, args, FLAGS, "jobs/preview_stream.py")
        init_ray()
        stream = build_stream(cfg)
    except (ConfigError, CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"corpus {cfg.data}: {stream.manifest.rows} rows in {len(stream.manifest.shards)} shard(s), "
          f"{stream.manifest.taxa} taxa; {cfg.text_source} captions {list(cfg.text_types)} "
          f"mixed {cfg.mixing.value}")
    for line in preview(stream.dataset.iterator(), cfg, args.batches, args.batch_size):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
