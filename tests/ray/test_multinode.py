"""Training across two Ray nodes (`ray.cluster_utils.Cluster`: two raylets on this host, 2 logical CPUs each):
with STRICT_SPREAD each worker runs on its own node, the gathered loss and gradients cross the nodes, the
stream's blocks travel between them, the run survives losing a node (its processes SIGKILLed, a new node
added as an autoscaler would), and the run's summary records where every rank ran at each start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml")


def two_node_cluster():
    """Two raylets on this host (2 CPUs each) and this process connected to them; a generator for a
    module fixture (tests/s3/test_s3_node_loss.py starts it after its S3 server, whose settings the nodes
    inherit)."""
    import gc

    import ray
    from ray.cluster_utils import Cluster

    # a lost node is declared dead after ~1.5 s of missed health checks instead of Ray's default ~30
    fast_death = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "_system_config": fast_death})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield cluster
    gc.collect()
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes():
    yield from two_node_cluster()


def test_two_workers_on_two_nodes_survive_losing_a_node_and_end_on_the_planned_step(two_nodes, ingest_synthetic,
                                                                                      tmp_path, load_job):
    """STRICT_SPREAD puts each worker on its own node; the worker node is then SIGKILLed mid-run (after the
    first checkpoint) and replaced: the run resumes from its last checkpoint, ends on the planned step
    with the optimiser's own step count equal to it, and its summary names the nodes of every start."""
    from pathlib import Path

    from linnaeus import storage
    from linnaeus.train import checkpoint as ckpt

    corpus = ingest_synthetic(24)
    sets = [f"data.data={corpus}", f"checkpoint.storage_path={tmp_path}", "checkpoint.name=spread",
            "schedule.batch_size=16", "data.shuffle_buffer=64", "data.preprocess_batch=16",
            "schedule.steps=12", "checkpoint.every_steps=4", "scaling.placement=STRICT_SPREAD"]
    argv = ["--config", DEMO, *[a for s in sets for a in ("--set", s)]]
    code, lost = _train_while_a_node_is_lost(two_nodes, load_job, argv, str(tmp_path / "spread"),
                                             lambda: ckpt.latest_in_run(storage.resolve(str(tmp_path / "spread"))))
    assert code == 0
    summary = json.loads((tmp_path / "spread" / "export" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["final_loss"] is not None
    first, *later = summary["starts"]
    assert first["step"] == 0 and len(first["nodes"]) == 2 and lost["lost"] in first["nodes"]
    assert later and later[-1]["step"] in (4, 8) and lost["lost"] not in later[-1]["nodes"]
    assert summary["nodes"] == 2 and [p["rank"] for p in summary["placement"]] == [0, 1]
    assert _optimizer_steps(Path(summary["checkpoint"])) == 12  # restored, not restarted: AdamW counted on
    print("node lost:", {"resumed_from_step": later[-1]["step"], "starts": len(summary["starts"]),
                         "wall_s": summary["wall_seconds"]})


def _worker_nodes(cluster) -> list:
    return [n for n in cluster.list_all_nodes() if n is not cluster.head_node]


def _train_while_a_node_is_lost(cluster, load_job, argv: list[str], run: str, latest) -> tuple[int, dict]:
    """Run the train job in a thread; once its first checkpoint is registered, SIGKILL the worker node's
    processes (`remove_node`, not graceful) and add a fresh node, as an autoscaler replaces a lost one."""
    import threading
    import time

    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(code=load_job("train").main(argv)), daemon=True)
    job.start()
    deadline = time.monotonic() + 300
    while latest() is None:
        assert job.is_alive() and time.monotonic() < deadline, "no checkpoint was registered"
        time.sleep(0.2)
    lost = _worker_nodes(cluster)[0]
    lost_id = lost.node_id
    cluster.remove_node(lost, allow_graceful=False)
    cluster.add_node(num_cpus=2)
    job.join(timeout=600)
    assert not job.is_alive(), "the run did not finish after the node was replaced"
    return outcome["code"], {"lost": lost_id}


def _optimizer_steps(checkpoint_folder) -> int:
    import torch

    state = torch.load(checkpoint_folder / "optimizer.pt", map_location="cpu")
    return int(max(s["step"] for s in state["state"].values()))
