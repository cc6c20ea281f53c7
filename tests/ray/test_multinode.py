"""Training across two Ray nodes (`ray.cluster_utils.Cluster`: two raylets on this host, 2 logical CPUs each):
with STRICT_SPREAD each worker runs on its own node, the gathered loss and gradients cross the nodes, the
stream's blocks travel between them, and the run's summary records where every rank ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def two_nodes():
    import gc

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield cluster
    gc.collect()
    ray.shutdown()
    cluster.shutdown()


def test_two_workers_on_two_nodes_train_and_the_summary_names_both_nodes(two_nodes, ingest_synthetic,
                                                                         tmp_path, load_job):
    import ray

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    corpus = ingest_synthetic(24)
    sets = [f"data.data={corpus}", f"checkpoint.storage_path={tmp_path}", "checkpoint.name=spread",
            "schedule.batch_size=16", "data.shuffle_buffer=64", "data.preprocess_batch=16",
            "schedule.steps=8", "checkpoint.every_steps=4", "scaling.placement=STRICT_SPREAD"]
    assert load_job("train").main(["--config", DEMO, *[a for s in sets for a in ("--set", s)]]) == 0
    summary = json.loads((tmp_path / "spread" / "export" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["final_loss"] is not None
    assert summary["nodes"] == 2
    assert [p["rank"] for p in summary["placement"]] == [0, 1]
    assert {p["node"] for p in summary["placement"]} == nodes
