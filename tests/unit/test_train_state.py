"""Checkpoint folders, run snapshots, the step plan and the run's outputs (no Ray)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import open_clip
import pytest
import torch

from linnaeus import storage
from linnaeus.clip.exports import WEIGHTS_NAME
from linnaeus.clip.models import create_model, register_configs
from linnaeus.config import TrainConfig, validate
from linnaeus.train import checkpoint as ckpt
from linnaeus.train.optim import build_optimizer, cosine_with_warmup
from linnaeus.train.outputs import write_outputs
from linnaeus.train.plan import TrainPlan, default_name


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("linnaeus-tiny")
    optimizer = build_optimizer(model, lr=1e-3)
    return model, optimizer, cosine_with_warmup(optimizer, 2, 20)


def _plan(tmp_path: Path, rows: int = 1000, units: int = 10, steps: int = 40, **schedule) -> TrainPlan:
    cfg = validate(TrainConfig, {"data": {"data": str(tmp_path / "corpus")}, "model": {"arch": "linnaeus-tiny"},
                                 "schedule": {"batch_size": 25, **schedule}, "scaling": {"workers": 2},
                                 "checkpoint": {"storage_path": str(tmp_path / "runs")}})
    return TrainPlan(cfg, "run-a", rows, units, steps)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler = _parts()
    model(torch.randn(2, 3, 64, 64), torch.randint(1, 400, (2, 77)))[0].sum().backward()
    optimizer.step(), scheduler.step(), scheduler.step()
    progress = ckpt.Progress(step=7, total_steps=20, position=33, epoch=1.5, history=[{"step": 5, "loss": 2.0}])
    for rank in (0, 1):
        ckpt.save(tmp_path, rank, model, optimizer, scheduler, progress)
    expected_draw = torch.rand(3)  # the RNG was saved before this draw

    fresh, fresh_opt, fresh_sched = _parts(seed=1)
    back = ckpt.load(tmp_path, 1, fresh, fresh_opt, fresh_sched)
    assert back == progress and sorted(p.name for p in tmp_path.glob("rng-rank*")) == ["rng-rank0.pt", "rng-rank1.pt"]
    assert torch.equal(torch.rand(3), expected_draw)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert fresh_sched.last_epoch == 2
    assert fresh_opt.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_latest_checkpoint_comes_from_rays_run_snapshot(tmp_path):
    run = storage.resolve(tmp_path)
    assert ckpt.latest_in_run(run) is None
    (tmp_path / ckpt.RAY_SNAPSHOT).write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": ckpt.dir_name(120), "metrics": {}}}))
    assert ckpt.latest_in_run(run).path == str(tmp_path / "checkpoint_000000120")


def test_stream_is_planned_past_the_last_step(tmp_path):
    plan = _plan(tmp_path)  # global batch 50, 1,000 rows in 10 row groups: 20 steps an epoch
    assert plan.epochs == 2.0
    assert plan.stream_epochs(position=0, steps_done=0) == (0, 4)  # epochs 0-1 needed, the rest spare
    start_epoch, epochs = plan.stream_epochs(position=25, steps_done=30)  # 10 steps = 5 groups left
    assert start_epoch == 2 and (start_epoch + epochs) * plan.units >= 25 + 5 + plan.units


def test_default_run_names_carry_the_recipe_and_utc_time():
    assert default_name("demo").startswith("demo-20") and len(default_name("demo")) == len("demo-20261122-101500")


def test_outputs_export_the_final_model_with_metrics_and_curve(tmp_path):
    model, optimizer, scheduler = _parts()
    history = [{"step": s, "epoch": s / 20, "loss": 4.0 - s / 10, "lr": 1e-3, "logit_scale": 14.3, "grad_norm": 1.0,
                "images_per_s": 100.0, "data_wait": 0.1, "eta_s": 40 - s} for s in (10, 20, 30, 40)]
    ckpt.save(tmp_path, 0, model, optimizer, scheduler,
              ckpt.Progress(step=40, total_steps=40, position=9, epoch=2.0, history=history))
    plan = _plan(tmp_path)
    summary = write_outputs(plan, tmp_path, "ckpt-uri", {"skipped": 2, "by_reason": {"undecodable": 2}}, 12.0)
    export = Path(plan.export_uri)
    assert summary["steps"] == 40 and summary["final_loss"] == pytest.approx(0.0) and summary["skipped_images"] == 2
    rows = list(csv.DictReader((export / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert (export / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    register_configs()
    loaded, _, _ = open_clip.create_model_and_transforms("linnaeus-tiny", pretrained=str(export / WEIGHTS_NAME))
    assert torch.equal(loaded.state_dict()["logit_scale"], model.state_dict()["logit_scale"])
    assert torch.equal(loaded.visual.conv1.weight, model.visual.conv1.weight)



def test_plan_warns_when_warmup_outlasts_the_run_or_the_batch_outgrows_the_corpus(tmp_path):
    long_run = TrainPlan(_plan(tmp_path).config, "run-a", rows=1000, units=10, total_steps=2000)
    assert long_run.warnings() == []
    short = _plan(tmp_path, steps=40)  # the default warmup is 1,000 steps
    assert any("optim.warmup_steps=1000 is not shorter than the run (40 steps)" in w for w in short.warnings())
    tiny_corpus = TrainPlan(long_run.config, "run-a", rows=30, units=1, total_steps=2000)
    assert any("larger than the corpus (30 images)" in w for w in tiny_corpus.warnings())


def test_cpu_share_keeps_reader_cpus_free_on_every_node(tmp_path):
    from linnaeus.config import ConfigError
    from linnaeus.train.trainer import share_cpus

    plan = _plan(tmp_path)  # 2 workers x 1 CPU, preprocessing actors of 1 CPU, readers 0.5 per node
    assert share_cpus(plan, {"CPU": 8}, joined=False).config.data.preprocess_workers == 5  # 8 - 2 - 0.5
    # 8.5 CPUs: 6 actors on one node (8.5 - 2 - 0.5); on two, each node keeps 0.5 for a reader (5.5 -> 5)
    assert share_cpus(plan, {"CPU": 8.5}, joined=False).config.data.preprocess_workers == 6
    assert share_cpus(plan, {"CPU": 8.5}, joined=False, nodes=2).config.data.preprocess_workers == 5
    with pytest.raises(ConfigError, match="on 3 node"):
        share_cpus(plan, {"CPU": 4}, joined=False, nodes=3)
