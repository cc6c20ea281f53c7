"""Benchmark: how fast a training recipe runs, against its own model-only ceiling and open_clip's trainer.

    python jobs/benchmark_train.py --config jobs/configs/cub50.yaml --set data.data=out/cub50 \
        --modes ceiling,data,e2e,openclip --steps 300 --warmup-steps 60 --output out/bench-train

Modes (see linnaeus.train.benchmark): `ceiling` (synthetic tensors through the same model, batch,
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

from linnaeus.config import ConfigError, TrainConfig, load_yaml
from linnaeus.data.shards import CorpusError
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.storage import StorageError
from linnaeus.train.plan import plan_training

MODES = ("ceiling", "data", "e2e", "openclip")
GOALS = {"e2e_over_ceiling": 0.95, "e2e_images_per_s": 3000.0, "linnaeus_over_openclip": 1.3}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe (jobs/configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--modes", default="ceiling,data,e2e", help=f"comma-separated, of {','.join(MODES)}")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps of the e2e and openclip runs")
    p.add_argument("--warmup-steps", type=int, default=40, help="steps left out of their steady state")
    p.add_argument("--ceiling-steps", type=int, default=30)
    p.add_argument("--ceiling-warmup", type=int, default=10, help="steps before timing (compilation)")
    p.add_argument("--data-batches", type=int, default=100)
    p.add_argument("--openclip-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                   help="open_clip_train's dataloader processes")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="bf16 peak for MFU when the device is not in linnaeus.train.flops' table")
    p.add_argument("--no-matmul-probe", action="store_true", help="skip measuring the bf16 matmul rate")
    p.add_argument("--output", required=True, help="local folder for benchmark.json, runs and logs")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown or not args.modes:
        p.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    if args.warmup_steps >= args.steps:
        p.error(f"--warmup-steps {args.warmup_steps} leaves no steady state in --steps {args.steps}")
    return args


def make_plan(args: argparse.Namespace, out: Path, name: str):
    overrides = [f"checkpoint.storage_path={out / 'runs'}", f"checkpoint.name={name}",
                 f"checkpoint.every_steps={args.steps}", f"schedule.steps={args.steps}", *args.overrides]
    cfg = load_yaml(TrainConfig, args.config, overrides)
    return plan_training(cfg, recipe=Path(args.config).stem)


def run(args: argparse.Namespace) -> dict:
    import torch

    from linnaeus.train import benchmark as bench
    from linnaeus.train import flops
    from linnaeus.train.ceiling import measure_ceiling
    from linnaeus.train.trainer import share_cluster_cpus

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args, out, f"bench-{os.getpid()}")
    cfg = plan.config
    device = bench.device_for(cfg)
    measured = None
    if device.type == "cuda" and not args.no_matmul_probe:
        measured = flops.measure_matmul_tflops(device)
    results: dict = {"recipe": args.config, "overrides": args.overrides, "global_batch": cfg.global_batch,
                     "measured_matmul_tflops": measured}
    if "ceiling" in args.modes:
        ceiling = measure_ceiling(cfg, device, args.ceiling_steps, args.ceiling_warmup)
        results["ceiling"] = bench.add_flops(ceiling, cfg, device, measured, args.peak_tflops, one_process=True)
        report("ceiling", results["ceiling"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if {"data", "e2e"} & set(args.modes):
        init_ray()
    if "data" in args.modes:
        shared = share_cluster_cpus(plan)
        results["data"] = bench.data_only(shared, device, args.data_batches, warmup=5)
        report("data", results["data"])
    if "e2e" in args.modes:
        results["e2e"] = bench.add_flops(bench.end_to_end(plan, args.warmup_steps), cfg, device, measured,
                                         args.peak_tflops)
        report("e2e", results["e2e"])
    if "openclip" in args.modes:
        results["openclip"] = bench.add_flops(
            bench.openclip(plan, out / "openclip", args.steps, args.warmup_steps, args.openclip_workers,
                           cfg.schedule.log_every, device.type), cfg, device, measured, args.peak_tflops,
            one_process=True)
        report("openclip", results["openclip"])
    results["summary"] = bench.summarise(results)
    results["goals"] = goals(results)
    return results


def report(mode: str, r: dict) -> None:
    parts = [f"[{mode}] {r['images_per_s']:,.0f} img/s per GPU" if r.get("images_per_s") else f"[{mode}] -"]
    if r.get("mfu") is not None:
        parts.append(f"MFU {r['mfu']:.1%} of {r['peak_bf16_tflops']:g} TFLOP/s")
    if r.get("mfu_of_measured") is not None:
        parts.append(f"{r['mfu_of_measured']:.1%} of the measured {r['measured_matmul_tflops']:.0f}")
    if r.get("gflop_per_image"):
        parts.append(f"{r['gflop_per_image']:.1f} GFLOP/img")
    if r.get("data_wait") is not None:
        parts.append(f"data wait {r['data_wait']:.0%}")
    if r.get("peak_gpu_mem_gib"):
        parts.append(f"peak {r['peak_gpu_mem_gib']:.1f} GiB")
    print(" | ".join(parts), flush=True)


def goals(results: dict) -> dict:
    s, e2e = results["summary"], (results.get("e2e") or {}).get("images_per_s")
    have = {"e2e_over_ceiling": s.get("e2e_over_ceiling"), "e2e_images_per_s": e2e,
            "linnaeus_over_openclip": s.get("linnaeus_over_openclip")}
    return {k: {"goal": GOALS[k], "measured": v, "met": v >= GOALS[k]} for k, v in have.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        results = run(args)
    except (ConfigError, CorpusError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (Path(args.output) / "benchmark.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({"summary": results["summary"], "goals": results["goals"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
