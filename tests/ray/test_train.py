"""Training end to end on a local Ray (2 CPU workers, gloo): the loss falls, a stopped run resumes, and
the export loads in open_clip. (A killed worker replaced mid-run: tests/ray/test_plugins.py, whose run
also has objective state to carry through the restart.)"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from linnaeus import storage
from linnaeus.clip.exports import WEIGHTS_NAME
from linnaeus.clip.models import register_configs
from linnaeus.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("ray_local")
DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def corpus(ingest_synthetic) -> Path:
    return ingest_synthetic(24)


def _args(corpus: Path, runs: Path, name: str, *sets: str) -> list[str]:
    base = [f"data.data={corpus}", f"checkpoint.storage_path={runs}", f"checkpoint.name={name}",
            "schedule.batch_size=16", "data.shuffle_buffer=64", "data.preprocess_batch=16"]
    return ["--config", DEMO, *[a for s in (*base, *sets) for a in ("--set", s)]]


def _summary(run: Path) -> dict:
    return json.loads((run / "export" / "summary.json").read_text())


def test_loss_falls_over_a_hundred_steps_and_the_export_loads_in_open_clip(corpus, tmp_path, load_job):
    job = load_job("train")
    assert job.main(_args(corpus, tmp_path, "falls", "schedule.steps=100", "optim.warmup_steps=10")) == 0
    export = tmp_path / "falls" / "export"
    history = json.loads((export / "metrics.json").read_text())
    assert [h["step"] for h in history] == list(range(10, 101, 10))
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-3:]) / 3
    assert last < first - 0.5, [round(h["loss"], 3) for h in history]
    assert _summary(tmp_path / "falls")["steps"] == 100
    assert (export / "training_curve.png").stat().st_size > 1000
    register_configs()
    model, _, preprocess = open_clip.create_model_and_transforms("linnaeus-tiny",
                                                                 pretrained=str(export / WEIGHTS_NAME))
    with torch.no_grad():
        features = model.encode_image(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, 64) and torch.isfinite(features).all()


def test_a_stopped_run_resumes_to_the_same_step_count(corpus, tmp_path, load_job, capsys):
    job = load_job("train")
    args = _args(corpus, tmp_path, "stopped", "schedule.steps=30", "checkpoint.every_steps=10",
                 "faults={kill_at_step: 15, rank: 0}", "checkpoint.max_failures=0")
    assert job.main(args) == 1
    err = capsys.readouterr().err
    assert "training failed" in err and f"--resume {tmp_path / 'stopped'}" in err
    assert job.main(args) == 2  # the name is taken: a second start must not silently continue or clobber
    assert "already holds a run" in capsys.readouterr().err
    # a checkpoint write interrupted half-way (a later folder, its model cut short, no state): never "latest"
    partial = tmp_path / "stopped" / "checkpoint_000000020"
    partial.mkdir()
    (partial / "model.pt").write_bytes((tmp_path / "stopped" / "checkpoint_000000010" / "model.pt").read_bytes()[:999])
    latest = ckpt.latest_in_run(storage.resolve(str(tmp_path / "stopped")))
    assert latest.uri.endswith("checkpoint_000000010")
    assert job.main(["--resume", str(tmp_path / "stopped")]) == 0
    summary = _summary(tmp_path / "stopped")
    assert summary["steps"] == summary["total_steps"] == 30
    assert [s["step"] for s in summary["starts"]] == [0, 10]
    state = json.loads((tmp_path / "stopped" / "checkpoint_000000030" / "state.json").read_text())
    assert [h["step"] for h in state["history"]] == [10, 20, 30]


def test_the_papers_recipe_passes_a_dry_run_without_fetching_weights(corpus, load_job, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no hub, here or anywhere
    argv = ["--config", str(Path(DEMO).with_name("bioclip-vitb16.yaml")), "--dry-run", "--set", f"data.data={corpus}"]
    assert load_job("train").main(argv) == 0
    out = capsys.readouterr().out
    assert "global 32,768 = 1024 per worker x 8 worker(s) x 4 accumulation" in out
    assert "pretrained 'openai'" in out and "this run would fail here" in out
    assert "149,620,737" in out  # ViT-B/16 built (random weights), not downloaded
    assert "fused attention True; cut text True; decode gpu" in out
