"""Draw a synthetic tree-of-life corpus in the `folder` ingest format (deterministic by seed).

    python jobs/synthesize.py --output out/synthetic --taxa 32 --images 24
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.data.synthetic import write_folder_corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True)
    p.add_argument("--taxa", type=int, default=32)
    p.add_argument("--images", type=int, default=24, help="images per taxon")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.taxa < 1 or args.images < 1 or args.size < 16:
        p.error("--taxa and --images must be >= 1 and --size >= 16")
    tree = write_folder_corpus(args.output, args.taxa, args.images, args.seed, args.size)
    print(f"wrote {len(tree)} taxa x {args.images} images to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
