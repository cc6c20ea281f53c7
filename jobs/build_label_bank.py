"""Build the label bank a served model predicts taxa from: every taxon embedded, next to the model.

    python jobs/build_label_bank.py --model out/demo/model --taxa out/demo/corpus --taxa out/demo/heldout
    python jobs/build_label_bank.py --model s3://models/bioclip --taxa s3://corpora/tol10m \
        --taxa extra-species.csv --text-types taxonomic_common,scientific --actors 4

--taxa (repeatable): a corpus (distinct lineages of its rows), a folder dataset (its taxa.csv) or a CSV
with kingdom..species[,common_name]. Writes Parquet + _bank.json to --output (default <model>/label_bank),
replacing an earlier bank there. Bad arguments, models or taxa exit 2 before any cluster work.
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.config import ConfigError, LabelBankConfig, validate
from linnaeus.models import ModelLoadError
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model (folder or s3:// prefix)")
    p.add_argument("--taxa", action="append", required=True, help="corpus, folder dataset or taxa CSV")
    p.add_argument("--output", help="bank location (default <model>/label_bank)")
    p.add_argument("--text-types", help="comma-separated BioCLIP text types (default taxonomic_common)")
    p.add_argument("--templates", help="openai (default), single or none")
    p.add_argument("--actors", type=int, help="embedding actors (one GPU each when there are GPUs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    raw = {"model": args.model, "taxa": args.taxa, "output": args.output, "templates": args.templates,
           "text_types": args.text_types.split(",") if args.text_types else None, "actors": args.actors}
    try:
        cfg = validate(LabelBankConfig, {k: v for k, v in raw.items() if v is not None}, "jobs/build_label_bank.py")
        from linnaeus.batch.label_bank import build_label_bank
        from linnaeus.batch.taxa import TaxaError, read_taxa
        from linnaeus.models import read_export
        from linnaeus.serving.bank import default_location

        try:
            export = read_export(cfg.model, cfg.s3)
            taxa = read_taxa(cfg.taxa, cfg.s3)
        except TaxaError as exc:
            raise ValueError(str(exc)) from None
        init_ray()
        summary = build_label_bank(export, taxa, cfg.output or default_location(cfg.model),
                                   [t.value for t in cfg.text_types], cfg.templates, cfg.actors, cfg.s3)
    except (ConfigError, StorageError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"label bank: {summary.taxa} taxa x {summary.dim} dims -> {summary.output} ({summary.seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
