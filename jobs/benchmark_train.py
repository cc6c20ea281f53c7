"""Benchmark: how fast a training recipe runs, against its own model-only ceiling and open_clip's trainer.

    python jobs/benchmark_train.py --config jobs/configs/cub50.yaml --set data.data=out/cub50 \
        --modes ceiling,data,e2e,openclip --steps 300 --warmup-steps 60 --output out/bench-train

Modes (see linnaeus.bench.training): `ceiling` (synthetic tensors through the same model, batch,
precision and compile settings), `data` (the stream alone, consumed on the trainer's device), `e2e` (the
real Ray Train job) and `openclip` (open_clip_train on the same images as WebDataset tars). Prints
images/s per GPU, MFU (FLOPs per image derived from the architecture), data wait and peak GPU memory,
and writes everything to <output>/benchmark.json. Speed goals live here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from linnaeus.bench.training import MODES, TrainBenchmark, run_benchmark
from linnaeus.config import ConfigError, TrainConfig
from linnaeus.config.cli import Flag, add_config_arguments, comma_list, config_from_args
from linnaeus.data.shards import CorpusError
from linnaeus.runtime import setup_logging
from linnaeus.storage import StorageError
from linnaeus.train.plan import plan_training

FLAGS = (Flag("--data", "data.data", "corpus URI (overrides the recipe's)"),)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, FLAGS, "YAML recipe (jobs/configs/*.yaml)")
    p.add_argument("--modes", type=comma_list, default=["ceiling", "data", "e2e"],
                   help=f"comma-separated, of {','.join(MODES)}")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps of the e2e and openclip runs")
    p.add_argument("--warmup-steps", type=int, default=40, help="steps left out of their steady state")
    p.add_argument("--ceiling-steps", type=int, default=30)
    p.add_argument("--ceiling-warmup", type=int, default=10, help="steps before timing (compilation)")
    p.add_argument("--data-batches", type=int, default=100)
    p.add_argument("--openclip-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                   help="open_clip_train's dataloader processes")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="bf16 peak for MFU when the device is not in linnaeus.bench.flops' table")
    p.add_argument("--no-matmul-probe", action="store_true", help="skip measuring the bf16 matmul rate")
    p.add_argument("--output", required=True, help="local folder for benchmark.json, runs and logs")
    args = p.parse_args(argv)
    unknown = sorted(set(args.modes) - set(MODES))
    if not args.config:
        p.error("--config is required")
    if unknown or not args.modes:
        p.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    if args.warmup_steps >= args.steps:
        p.error(f"--warmup-steps {args.warmup_steps} leaves no steady state in --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    args.overrides = [f"checkpoint.storage_path={out / 'runs'}", f"checkpoint.name=bench-{os.getpid()}",
                      f"checkpoint.every_steps={args.steps}", f"schedule.steps={args.steps}", *args.overrides]
    opts = TrainBenchmark(out, tuple(args.modes), args.steps, args.warmup_steps, args.ceiling_steps,
                          args.ceiling_warmup, args.data_batches, args.openclip_workers, args.peak_tflops,
                          not args.no_matmul_probe)
    try:
        plan = plan_training(config_from_args(TrainConfig, args, FLAGS, "jobs/benchmark_train.py"),
                             recipe=Path(args.config).stem)
        results = {"recipe": args.config, "overrides": args.overrides, **run_benchmark(plan, opts)}
    except (ConfigError, CorpusError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (out / "benchmark.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({"summary": results["summary"], "goals": results["goals"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
