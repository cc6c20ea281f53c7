"""Evaluate a model: zero-shot, few-shot (SimpleShot), accuracy per rank, retrieval and hierarchy.

    python jobs/evaluate.py --model out/runs/<run>/export --data out/demo/heldout --output out/eval
    python jobs/evaluate.py --model out/runs/<run>/export --compare init:out/runs/<run> \
        --data my-photos/ --output out/eval --compare-text-type common
    python jobs/evaluate.py --model arch:ViT-B-16@openai --data s3://corpora/cub50 --output out/eval-openai
    python jobs/evaluate.py --config eval.yaml --set shots=[1,5,10]

--model / --compare: an exported model (folder or s3://), init:<run folder> (the weights that run started
from), or arch:<open_clip name>[@<pretrained tag or checkpoint>]. --data: a corpus (from jobs/ingest.py)
or a folder dataset (images/<folder>/* + taxa.csv) read in place. Settings: linnaeus.config.EvalConfig,
from --config FILE, the flags below and --set key=value (later wins). Writes results.json, report.md and
embedding_map.png to --output and prints the report. Bad settings, data or models exit 2 before any
cluster work.
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.clip.models import ModelLoadError
from linnaeus.config import ConfigError, EvalConfig
from linnaeus.config.cli import Flag, add_config_arguments, comma_ints, comma_list, config_from_args
from linnaeus.data.inputs import InputError
from linnaeus.runtime import init_ray, setup_logging, storage_retries
from linnaeus.storage import StorageError

FLAGS = (
    Flag("--model", "model", "exported model, init:<run> or arch:<name>[@<init>]"),
    Flag("--data", "data", "corpus or folder dataset"),
    Flag("--output", "output", "folder or s3:// prefix for the reports"),
    Flag("--compare", "compare", "a second model, reported side by side"),
    Flag("--tasks", "tasks", "comma-separated: zeroshot,fewshot,retrieval,hierarchy (default: all)", comma_list),
    Flag("--text-type", "text_type", "class-name text type for zero-shot (default taxonomic_common)"),
    Flag("--compare-text-type", "compare_text_type", "also score with this text type, in its own column"),
    Flag("--templates", "templates", "openai (80 CLIP templates, default) or single"),
    Flag("--rank", "rank", "classify at this rank (default species)"),
    Flag("--shots", "shots", "comma-separated few-shot k (default 1,5)", comma_ints),
    Flag("--seeds", "seeds", "few-shot draws (default 5)", int),
    Flag("--map-rank", "map_rank", "colour the embedding map by this rank (default order)"),
    Flag("--actors", "actors", "model actors (default: 4 per GPU; CPU tasks decode)", int),
)


def config_from(argv: list[str] | None) -> EvalConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS)
    return config_from_args(EvalConfig, p.parse_args(argv), FLAGS, "jobs/evaluate.py")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        cfg = config_from(argv)
        from linnaeus.eval.run import check_inputs, run_evaluation

        with storage_retries():  # the model checks' S3 retries count too
            models = check_inputs(cfg)
            init_ray()
            results, out = run_evaluation(cfg, models)
    except (ConfigError, InputError, StorageError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from linnaeus.eval.report import markdown

    print(markdown(results, cfg))
    print(f"written: {out.uri}/results.json, report.md, embedding_map.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
