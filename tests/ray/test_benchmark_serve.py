"""The serving benchmark end to end on CPU (tiny model, local Ray Serve, real HTTP): one scenario runs
and its figures hang together, including the ingress's Server-Timing split and CPU by process role."""

from __future__ import annotations

import json

import numpy as np
import pytest

from linnaeus.data.synthetic import draw, make_tree

pytestmark = pytest.mark.usefixtures("ray_local")


def test_benchmark_reports_rate_latency_ingress_split_and_cpu_by_role(load_job, tmp_path):
    tree, rng = make_tree(4, seed=0), np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        draw(tree[i], rng, size=96).save(photos / f"{i}.jpg", format="JPEG")
    out = tmp_path / "bench"
    bench = load_job("benchmark_serve")
    assert bench.main(["--model", "arch:linnaeus-tiny", "--images", str(photos), "--output", str(out),
                       "--scenarios", "batch32-c16-nowait", "--duration", "4", "--warmup", "2",
                       "--ingress-replicas", "1", "--client-processes", "1", "--cuda-graphs", "0",
                       "--no-model-only"]) == 0
    results = json.loads((out / "results.json").read_text())
    # Ray was running before the script (this module's fixture), without HAProxy: it keeps its own front,
    # and the script says which one answered
    assert results["env"]["http_front"] == "proxy"
    row = results["scenarios"][0]
    assert row["errors"] == 0 and row["requests"] > 0
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    split = row["server_p50_ms"]
    assert set(split) == {"parse", "decode", "model", "ingress"}
    assert split["ingress"] <= row["p50_ms"]  # each request's handler time is part of its client time
    cpu = row["cpu_ms_per_image"]
    assert cpu["ingress"] > 0 and cpu["model"] > 0 and cpu["proxy"] > 0
    assert row["mean_batch"] >= 32  # whole 32-image requests reach the model together
