"""Evaluate a model: zero-shot, few-shot (SimpleShot), accuracy per rank, retrieval and hierarchy.

    python jobs/evaluate.py --model out/runs/<run>/export --data out/demo/heldout --output out/eval
    python jobs/evaluate.py --model out/runs/<run>/export --compare init:out/runs/<run> \
        --data my-photos/ --output out/eval --compare-text-type common
    python jobs/evaluate.py --model arch:ViT-B-16@openai --data s3://corpora/cub50 --output out/eval-openai

--model / --compare: an exported model (folder or s3://), init:<run folder> (the weights that run started
from), or arch:<open_clip name>[@<pretrained tag or checkpoint>]. --data: a corpus (from jobs/ingest.py)
or a folder dataset (images/<folder>/* + taxa.csv) read in place. Writes results.json, report.md and
embedding_map.png to --output and prints the report. Bad arguments, data or models exit 2 before any
cluster work.
"""

from __future__ import annotations

import argparse
import sys

from linnaeus.config import ConfigError, EvalConfig, validate
from linnaeus.data.sources import SourceError
from linnaeus.models import ModelLoadError
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--compare", help="a second model, reported side by side")
    p.add_argument("--tasks", help="comma-separated: zeroshot,fewshot,retrieval,hierarchy (default: all)")
    p.add_argument("--text-type", help="class-name text type for zero-shot (default taxonomic_common)")
    p.add_argument("--compare-text-type", help="also score with this text type, in its own column")
    p.add_argument("--templates", help="openai (80 CLIP templates, default) or single")
    p.add_argument("--rank", help="classify at this rank (default species)")
    p.add_argument("--shots", help="comma-separated few-shot k (default 1,5)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--map-rank", help="colour the embedding map by this rank (default order)")
    p.add_argument("--actors", type=int, help="model actors (default: 4 per GPU; CPU tasks decode)")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> EvalConfig:
    raw = {"model": args.model, "data": args.data, "output": args.output, "compare": args.compare,
           "tasks": args.tasks.split(",") if args.tasks else None, "text_type": args.text_type,
           "compare_text_type": args.compare_text_type, "templates": args.templates, "rank": args.rank,
           "seeds": args.seeds, "map_rank": args.map_rank,
           "shots": [int(k) for k in args.shots.split(",")] if args.shots else None, "actors": args.actors}
    return validate(EvalConfig, {k: v for k, v in raw.items() if v is not None}, "jobs/evaluate.py")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = config_from(args)
        from linnaeus.eval.run import check_inputs, run_evaluation

        models = check_inputs(cfg)
        init_ray()
        results, out = run_evaluation(cfg, models)
    except (ConfigError, SourceError, StorageError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from linnaeus.eval.report import markdown

    print(markdown(results, cfg))
    print(f"written: {out.uri}/results.json, report.md, embedding_map.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
