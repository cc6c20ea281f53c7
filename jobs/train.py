"""Train a BioCLIP-style open_clip model on Ray Train, then export it in open_clip's format.

    python jobs/train.py --config jobs/configs/demo.yaml
    python jobs/train.py --config jobs/configs/cub50.yaml --set scaling.workers=4 --set scaling.use_gpu=true
    python jobs/train.py --config jobs/configs/bioclip-vitb16.yaml --dry-run
    python jobs/train.py --resume out/runs/demo-20261122-101500      # continue a stopped run

The recipe (linnaeus.config.TrainConfig) comes from --config FILE, --data and --set key=value (later
wins). Starts a local Ray unless RAY_ADDRESS (or `ray job submit`) names a cluster. Configuration,
corpus and model problems fail here, naming the field, file or URI, before any cluster work (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from linnaeus.clip.models import ModelLoadError, check_init
from linnaeus.config import ConfigError, TrainConfig
from linnaeus.config.cli import Flag, add_config_arguments, config_from_args
from linnaeus.data.shards import CorpusError
from linnaeus.runtime import init_ray, setup_logging, storage_retries
from linnaeus.storage import StorageError
from linnaeus.train.plan import TrainPlan, load_plan, plan_training

FAILURES = (ConfigError, CorpusError, StorageError, ModelLoadError)
FLAGS = (Flag("--data", "data.data", "corpus URI (overrides the recipe's data.data)"),)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS, "YAML recipe (jobs/configs/*.yaml)")
    p.add_argument("--resume", metavar="RUN_URI", help="run folder of an earlier run to continue")
    p.add_argument("--dry-run", action="store_true", help="validate and build everything, then exit")
    args = p.parse_args(argv)
    if bool(args.config) == bool(args.resume):
        p.error("give one of --config (a new run) or --resume (an earlier run)")
    if args.resume and args.data:
        p.error("--data: a resumed run reads the corpus it started on")
    return args


def make_plan(args: argparse.Namespace) -> TrainPlan:
    if args.resume:
        return load_plan(args.resume, args.overrides)
    cfg = config_from_args(TrainConfig, args, FLAGS, "jobs/train.py")
    return plan_training(cfg, recipe=Path(args.config).stem)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    with storage_retries():  # every S3 retry of the job counts, the planning reads' too
        return run(args)


def run(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
        print("\n".join(plan.summary()), flush=True)
        if args.dry_run:
            from linnaeus.train.dry_run import dry_run

            print("\n".join(dry_run(plan)))
            return 0
        cfg = plan.config
        check_init(cfg.model.arch, cfg.model.init, cfg.s3, strict=True)  # not in every worker, 10 times over
        init_ray()
        from linnaeus.train.trainer import TrainingFailed, run_training

        try:
            summary = run_training(plan, resume=bool(args.resume))
        except TrainingFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    except FAILURES as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    print(f"\nexported model: {summary['export']} (open_clip format; see README 'Models')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
