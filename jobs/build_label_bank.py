"""Build the label bank a served model predicts taxa from: every taxon embedded, next to the model.

    python jobs/build_label_bank.py --model out/demo/model --taxa out/demo/corpus --taxa out/demo/heldout
    python jobs/build_label_bank.py --model s3://models/bioclip --taxa s3://corpora/tol10m \
        --taxa extra-species.csv --text-types taxonomic_common,scientific --actors 4

--taxa (repeatable): a corpus (distinct lineages of its rows), a folder dataset (its taxa.csv) or a CSV
with kingdom..species[,common_name]. Writes Parquet + _bank.json to --output (default <model>/label_bank),
replacing an earlier bank there. Settings: linnaeus.config.LabelBankConfig, from --config FILE, the flags
below and --set key=value (later wins). Bad settings, models or taxa exit 2 before any cluster work.
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.clip.models import ModelLoadError
from linnaeus.config import ConfigError, LabelBankConfig
from linnaeus.config.cli import Flag, add_config_arguments, comma_list, config_from_args
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError

FLAGS = (
    Flag("--model", "model", "exported model (folder or s3:// prefix)"),
    Flag("--taxa", "taxa", "corpus, folder dataset or taxa CSV (repeatable)", repeat=True),
    Flag("--output", "output", "bank location (default <model>/label_bank)"),
    Flag("--text-types", "text_types", "comma-separated BioCLIP text types (default taxonomic_common)", comma_list),
    Flag("--templates", "templates", "openai (default), single or none"),
    Flag("--actors", "actors", "embedding actors (one GPU each when there are GPUs)", int),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS)
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(LabelBankConfig, args, FLAGS, "jobs/build_label_bank.py")
        from linnaeus.batch.label_bank import build_label_bank
        from linnaeus.batch.taxa import TaxaError, read_taxa
        from linnaeus.clip.exports import read_export
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
