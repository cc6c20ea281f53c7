"""Training against flaky object storage (moto's S3 server on loopback, behind a proxy that answers one
request in ten `503 SlowDown`): the corpus (ingested and streamed), the checkpoints and the export all
live in s3://; every one completes through the S3 client's retries, and a run stopped by a killed
worker resumes from its s3:// run folder."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from linnaeus import storage
from linnaeus.clip.exports import WEIGHTS_NAME
from linnaeus.clip.models import register_configs
from linnaeus.config import IngestConfig
from linnaeus.data.ingest import run_ingest

pytestmark = pytest.mark.usefixtures("ray_s3")
S3_FAIL_RATE = 0.1  # tests/s3/conftest.py puts the fault proxy in front of moto for this module
DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml")


def test_checkpoints_in_flaky_s3_and_a_stopped_run_resumes_from_there(synthetic_folder, tmp_path, load_job, capsys,
                                                                     s3_faults):
    proxy = s3_faults[0]
    injected = proxy.injected
    result = run_ingest(IngestConfig(input=str(synthetic_folder), format="folder", output="s3://corpora/train",
                                     shard_rows=24))
    assert result.rows == 96 and result.skipped == 0
    ingest_faults = proxy.injected - injected
    sets = ["data.data=s3://corpora/train", "checkpoint.storage_path=s3://runs/linnaeus", "checkpoint.name=s3run",
            "schedule.batch_size=16", "schedule.steps=30", "checkpoint.every_steps=10", "checkpoint.keep=2",
            "faults={kill_at_step: 15, rank: 1}", "checkpoint.max_failures=0", "data.shuffle_buffer=64"]
    job = load_job("train")
    assert job.main(["--config", DEMO, *[a for s in sets for a in ("--set", s)]]) == 1
    assert "--resume s3://runs/linnaeus/s3run" in capsys.readouterr().err

    injected = proxy.injected
    assert job.main(["--resume", "s3://runs/linnaeus/s3run"]) == 0
    resumed_faults = proxy.injected - injected
    run = storage.resolve("s3://runs/linnaeus/s3run")
    names = {info.path.split("/")[-2] for info in storage.list_files(run, recursive=True)
             if info.path.endswith("/state.json")}
    assert names == {"checkpoint_000000020", "checkpoint_000000030"}  # keep=2
    summary = json.loads(storage.read_bytes(run.join("export", "summary.json")))
    assert summary["steps"] == summary["total_steps"] == 30 and summary["export"].startswith("s3://")
    # Every retry is one failed request, counted wherever it happened: the drivers, Ray Data's tasks,
    # Ray Train's controller (the stream's planning) and workers (checkpoints). The counts are taken
    # before the reports are written, so retries after that (the reports' own writes) are not in them:
    # hence "most", not "all".
    retried = summary["storage_retries"]
    assert {"read", "write"} <= set(retried["by_operation"])

    # the exported model evaluated on the corpus, both in flaky S3 (its model actors count too)
    injected = proxy.injected
    argv = ["--model", summary["export"], "--data", "s3://corpora/train", "--output", "s3://evals/s3run",
            "--tasks", "zeroshot", "--actors", "1"]
    assert load_job("evaluate").main(argv) == 0
    eval_faults = proxy.injected - injected
    evaluated = json.loads(storage.read_bytes(storage.resolve("s3://evals/s3run/results.json")))
    assert evaluated["models"] and evaluated["storage_retries"]["requests"] <= eval_faults

    counted = result.storage_retries + retried["requests"] + evaluated["storage_retries"]["requests"]
    faults = ingest_faults + resumed_faults + eval_faults
    assert 0.75 * faults <= counted <= faults and faults > 10

    local = tmp_path / WEIGHTS_NAME
    local.write_bytes(storage.read_bytes(run.join("export", WEIGHTS_NAME)))
    register_configs()
    model, _, _ = open_clip.create_model_and_transforms("linnaeus-tiny", pretrained=str(local))
    with torch.no_grad():
        assert torch.isfinite(model.encode_image(torch.zeros(1, 3, 64, 64))).all()
    assert proxy.injected > 10  # the faults were real, and every one was retried: the run is complete
    print(f"S3 faults: {proxy.injected} of {proxy.injected + proxy.forwarded} requests answered 503 SlowDown; "
          f"ingest counted {result.storage_retries} of its {ingest_faults}, the resumed run {retried} of its "
          f"{resumed_faults}, evaluation {evaluated['storage_retries']['requests']} of its {eval_faults}")
