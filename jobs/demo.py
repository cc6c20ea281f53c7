"""The quickstart (`make demo`): synthesise a corpus -> ingest it into shards -> stream training batches.

Everything runs on this machine (local Ray, local folders) and lands under --output:
    raw/       the synthetic images in the folder format (images/<taxon>/*.jpg + taxa.csv)
    corpus/    Parquet shards + _manifest.json + _report.json
Training, export and evaluation join this demo as they land (see the README's status table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from linnaeus.config import IngestConfig, StreamConfig
from linnaeus.data.ingest import run_ingest
from linnaeus.data.loader import preview
from linnaeus.data.stream import build_stream
from linnaeus.data.synthetic import write_folder_corpus
from linnaeus.runtime import init_ray, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="out/demo")
    p.add_argument("--taxa", type=int, default=32)
    p.add_argument("--images", type=int, default=24, help="images per taxon")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup_logging()
    out = Path(args.output).resolve()
    print(f"[1/3] synthesising {args.taxa} taxa x {args.images} images -> {out / 'raw'}")
    write_folder_corpus(out / "raw", args.taxa, args.images, args.seed, size=96)
    init_ray()
    print(f"[2/3] ingesting -> {out / 'corpus'}")
    result = run_ingest(IngestConfig(input=str(out / "raw"), format="folder",
                                     output=str(out / "corpus"), shard_rows=256))
    print(f"      {result.rows} rows, {result.taxa} taxa, {result.shards} shards, "
          f"{result.skipped} skipped in {result.seconds:.1f}s")
    cfg = StreamConfig(data=str(out / "corpus"), image_size=64)
    print("[3/3] streaming two training batches (decoded captions as the tokenizer sees them)")
    for line in preview(build_stream(cfg).dataset.iterator(), cfg, batches=2, batch_size=6):
        print(line)
    print(f"\ndone: images {out / 'raw'}\n      corpus {out / 'corpus'} "
          f"(manifest: {out / 'corpus' / '_manifest.json'}, report: {out / 'corpus' / '_report.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
