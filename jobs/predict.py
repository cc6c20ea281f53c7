"""Predict every image under a folder or bucket: top-k taxa at a rank, or top-k of your own labels.

    python jobs/predict.py --model out/demo/model --input out/demo/heldout/images --output out/predictions
    python jobs/predict.py --model s3://models/bioclip --input s3://camera-traps/2026/ \
        --output s3://predictions/2026 --rank genus --k 3 --subset Mammalia --actors 4 --format csv
    python jobs/predict.py --model out/demo/model --input photos/ --output out/p --labels labels.txt

Taxa come from the model's label bank (jobs/build_label_bank.py; --bank to name another); --labels FILE
(one label per line) classifies against free text instead. Writes one row per file (path, error,
name_i, probability_i, ...) as Parquet or CSV, then _report.json with what was skipped and why.
Settings: linnaeus.config.PredictConfig, from --config FILE, the flags below and --set key=value (later
wins). Bad settings, models or banks exit 2 before any cluster work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from linnaeus.clip.models import ModelLoadError
from linnaeus.config import ConfigError, PredictConfig
from linnaeus.config.cli import Flag, add_config_arguments, comma_list, config_from_args
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError

FLAGS = (
    Flag("--model", "model", "exported model (folder or s3:// prefix)"),
    Flag("--input", "input", "folder or s3:// prefix of images (recursive)"),
    Flag("--output", "output", "folder or s3:// prefix for the predictions"),
    Flag("--rank", "rank", "taxonomic rank of the answers (default species)"),
    Flag("--k", "k", "answers per image (default 5)", int),
    Flag("--templates", "templates", "for --labels: openai (default), single or none"),
    Flag("--subset", "subset", "comma-separated taxon names to restrict the answers to", comma_list),
    Flag("--bank", "bank", "label bank (default <model>/label_bank)"),
    Flag("--format", "format", "parquet (default) or csv"),
    Flag("--actors", "actors", "model actors", int),
    Flag("--batch-size", "batch_size", "images per model batch", int),
)


def _labels(path: str | None) -> list[str] | None:
    if path is None:
        return None
    try:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ValueError(f"--labels {path}: {exc.strerror}") from None
    if not labels:
        raise ValueError(f"--labels {path}: no labels in the file")
    return labels


def check(cfg: PredictConfig) -> None:
    """Everything that can be checked before Ray: the output cannot clobber the input or unrelated files,
    the model loads, and for taxa the bank is this model's, knows the rank and every subset name."""
    import torch

    from linnaeus.batch.predict import check_output
    from linnaeus.clip.exports import read_export
    from linnaeus.serving.bank import BankError, LabelBank, default_location, load_taxa, read_meta

    check_output(cfg)
    export = read_export(cfg.model, cfg.s3)
    if cfg.labels is None:
        bank_uri = cfg.bank or default_location(cfg.model)
        taxa = load_taxa(bank_uri, cfg.s3)
        if read_meta(bank_uri, cfg.s3).get("model_digest") != export.digest:
            raise BankError(f"{bank_uri}: built for other weights than {cfg.model}; rebuild it with "
                            "jobs/build_label_bank.py")
        names_only = LabelBank(taxa, torch.zeros(len(taxa), 1))
        rows = names_only.subset(cfg.subset) if cfg.subset else torch.arange(len(taxa))
        if not (names_only.groups(cfg.rank)[0][rows] >= 0).any():
            raise BankError(f"rank {cfg.rank!r}: no taxon in the label bank{' subset' if cfg.subset else ''} "
                            "is known at that rank")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS)
    p.add_argument("--labels", help="a text file with one free-text label per line")
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(PredictConfig, args, FLAGS, "jobs/predict.py", {"labels": _labels(args.labels)})
        from linnaeus.batch.predict import run_predict
        from linnaeus.serving.bank import BankError

        try:
            check(cfg)
        except BankError as exc:
            raise ValueError(str(exc)) from None
        init_ray()
        report = run_predict(cfg)
    except (ConfigError, StorageError, ModelLoadError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k not in ("skipped_files", "not_image_examples")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
