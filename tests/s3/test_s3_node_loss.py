"""A worker node lost mid-run while the run's checkpoints live in S3 (moto): two raylets on this host
(`ray.cluster_utils.Cluster`), STRICT_SPREAD, the worker node's processes SIGKILLed after the first
checkpoint reaches s3:// and a new node added; the run resumes from the checkpoint in S3 and ends on the
planned step with the optimiser's own step count. The local-storage twin is tests/ray/test_multinode.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linnaeus import storage
from linnaeus.config import IngestConfig
from linnaeus.data.ingest import run_ingest
from linnaeus.train import checkpoint as ckpt
from tests.ray.test_multinode import DEMO, _optimizer_steps, _train_while_a_node_is_lost, two_node_cluster


@pytest.fixture(scope="module")
def two_nodes_s3(s3_endpoint):
    yield from two_node_cluster()


def test_a_node_lost_mid_run_resumes_from_the_checkpoint_in_s3(two_nodes_s3, synthetic_folder, tmp_path, load_job):
    run_ingest(IngestConfig(input=str(synthetic_folder), format="folder", output="s3://corpora/nodes", shard_rows=24))
    run = "s3://runs/nodes/spread"
    sets = ["data.data=s3://corpora/nodes", "checkpoint.storage_path=s3://runs/nodes", "checkpoint.name=spread",
            "schedule.batch_size=16", "data.shuffle_buffer=64", "data.preprocess_batch=16",
            "schedule.steps=12", "checkpoint.every_steps=4", "scaling.placement=STRICT_SPREAD"]
    argv = ["--config", DEMO, *[a for s in sets for a in ("--set", s)]]
    code, lost = _train_while_a_node_is_lost(two_nodes_s3, load_job, argv, run,
                                             lambda: ckpt.latest_in_run(storage.resolve(run)))
    assert code == 0
    summary = json.loads(storage.read_bytes(storage.resolve(run).join("export", "summary.json")))
    assert summary["steps"] == 12 and summary["checkpoint"].startswith("s3://")
    first, *later = summary["starts"]
    assert first["step"] == 0 and lost["lost"] in first["nodes"]
    assert later and later[-1]["step"] in (4, 8) and lost["lost"] not in later[-1]["nodes"]
    final = storage.resolve(summary["checkpoint"])
    local = tmp_path / "final"
    local.mkdir()
    (local / "optimizer.pt").write_bytes(storage.read_bytes(final.join("optimizer.pt")))
    assert _optimizer_steps(Path(local)) == 12
    print("node lost (s3):", {"resumed_from_step": later[-1]["step"], "wall_s": summary["wall_seconds"]})
