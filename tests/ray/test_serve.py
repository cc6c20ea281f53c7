"""The service over real HTTP: a tiny model on a local Ray Serve, every endpoint, limit and error path."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from PIL import Image

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.data.synthetic import draw, make_tree
from linnaeus.serving.bank import LabelBank, taxa_embeddings
from linnaeus.serving.predictor import Predictor
from tests.credentials import API_KEY
from tests.hostile import EXPECTED as HOSTILE_EXPECTED
from tests.hostile import hostile_images

API_KEY_ENV = "LINNAEUS_TEST_API_KEY"
BATCHING = {"max_batch_size": 16, "batch_wait_timeout_s": 0.2}
METRICS_ENV = {"RAY_enable_metrics_collection": "1", "RAY_metrics_report_interval_ms": "1000"}
# HAProxy in front of the ingress replicas, as `make serve` and the infra files run the service; ingress
# replicas drain for 1 s instead of 30 at shutdown. tests/ray/test_benchmark_serve.py runs behind Serve's
# own proxy.
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
# HAProxy's stats page and exporter, and Serve's fallback proxy, listen on fixed ports: free ones here,
# so that a `make serve` on the same host does not collide with the suite
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tree():
    return make_tree(12, seed=1)


@pytest.fixture(scope="module")
def photos(tree):
    rng = np.random.default_rng(0)
    return [_jpeg(draw(tree[i % len(tree)], rng, size=96)) for i in range(8)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tree):
    out = str(tmp_path_factory.mktemp("served") / "model")
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", out)
    p = Predictor(out, device="cpu")
    taxa = [t.taxon for t in tree]
    emb = taxa_embeddings(p.model, p.tokenizer, taxa, ["taxonomic_common"], "single")
    LabelBank(taxa, emb, {"model_digest": p.model_id, "dim": emb.shape[1]}).save(f"{out}/label_bank")
    return out


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "api-key"
    path.write_text(API_KEY + "\n")  # as a Kubernetes secret mounted as a file
    return path


@pytest.fixture(scope="module")
def server(model_dir, metrics_port, key_file):
    # This module checks the service's Prometheus metrics, so it turns Ray's metrics back on (conftest
    # turns them off for the other modules) and has them exported every second instead of every ten.
    env = {API_KEY_ENV: API_KEY, **METRICS_ENV, **HAPROXY_ENV, **{k: str(_free_port()) for k in HAPROXY_PORTS}}
    with pytest.MonkeyPatch.context() as patch:  # restored even when the setup fails
        for key, value in env.items():
            patch.setenv(key, value)  # inherited by the Ray processes started next
        yield from _serve(model_dir, metrics_port, key_file)


def _serve(model_dir, metrics_port, key_file):
    import ray
    from ray import serve

    from serve.app import build_app

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _metrics_export_port=metrics_port)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        small = {"max_image_bytes": 200_000, "max_image_pixels": 1_000_000, "max_images": 4, "max_labels": 5,
                 "max_texts": 3, "max_text_chars": 40, "max_k": 10, "max_body_bytes": 2_000_000}
        common = {"model": model_dir, "model_cpus": 0.25, "ingress_cpus": 0.25, "limits": small,
                  "batching": BATCHING}
        serve.run(build_app({**common, "api_key_env": None}), name="open", route_prefix="/")
        serve.run(build_app({**common, "api_key_env": API_KEY_ENV}), name="secure", route_prefix="/secure")
        scaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
                   "downscale_delay_s": 2, "metrics_interval_s": 0.5, "look_back_period_s": 2}
        serve.run(build_app({**common, "api_key_env": None, "model_autoscaling": scaling}), name="scaling",
                  route_prefix="/scaling")
        # the key from a file, a per-client rate (burst 4, then one request per 20 s) and in-flight cap
        guarded = {**common, "model_cpus": 0.1, "ingress_cpus": 0.1, "api_key_env": None,
                   "api_key_file": str(key_file),
                   "limits": {**small, "client_rate": 0.05, "client_burst": 4, "client_concurrency": 1}}
        serve.run(build_app(guarded), name="guarded", route_prefix="/guarded")
        yield f"http://127.0.0.1:{port}"
        serve.shutdown()
    finally:
        ray.shutdown()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_classify_ranks_free_text_labels_for_each_image(server, photos):
    labels = ["a red shape", "a blue shape", "a striped animal"]
    r = requests.post(f"{server}/v1/classify", json={"images": [_b64(p) for p in photos[:3]],
                                                     "labels": labels, "k": 2}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 3 and all(len(res) == 2 for res in body["results"])
    for res in body["results"]:
        assert {a["label"] for a in res} <= set(labels)
        assert res[0]["probability"] >= res[1]["probability"] > 0


def test_taxonomy_answers_at_a_rank_with_lineage_and_subset(server, photos, tree):
    r = requests.post(f"{server}/v1/taxonomy", json={"images": [_b64(photos[0])], "rank": "genus", "k": 3},
                      timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["results"][0]
    assert len(answers) == 3 and set(answers[0]["lineage"]) == {"kingdom", "phylum", "class", "order",
                                                                "family", "genus"}
    family = tree[0].taxon.family
    r = requests.post(f"{server}/v1/taxonomy", json={"images": [_b64(photos[0])], "subset": [family], "k": 10},
                      timeout=60)
    assert r.status_code == 200, r.text
    assert {a["lineage"]["family"] for a in r.json()["results"][0]} == {family}
    r = requests.post(f"{server}/v1/taxonomy", json={"images": [_b64(photos[0])], "subset": ["Nopeus"]},
                      timeout=60)
    assert r.status_code == 400 and "Nopeus" in r.json()["detail"]


def test_embed_returns_vectors_for_images_or_texts(server, photos):
    r = requests.post(f"{server}/v1/embed", json={"images": [_b64(p) for p in photos[:2]]}, timeout=60)
    assert r.status_code == 200, r.text
    vectors = np.array(r.json()["embeddings"])
    assert vectors.shape == (2, r.json()["dim"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    r = requests.post(f"{server}/v1/embed", json={"texts": ["Aves", "a photo of a gull."]}, timeout=60)
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 2
    r = requests.post(f"{server}/v1/embed", json={"texts": ["x"], "images": [_b64(photos[0])]}, timeout=60)
    assert r.status_code == 422 and "either images or texts" in r.json()["detail"]


def test_multipart_uploads_give_the_same_answer_as_base64(server, photos):
    labels = ["a red shape", "a blue shape"]
    as_json = requests.post(f"{server}/v1/classify", json={"images": [_b64(photos[0])], "labels": labels},
                            timeout=60).json()
    as_form = requests.post(f"{server}/v1/classify", files=[("images", ("a.jpg", photos[0], "image/jpeg"))],
                            data={"labels": labels}, timeout=60)
    assert as_form.status_code == 200, as_form.text
    assert as_form.json()["results"] == as_json["results"]


@pytest.mark.parametrize("payload,status,reason,fragment", [
    ({"images": ["@@notbase64@@"], "labels": ["a"]}, 400, "bad_base64", "images[0]"),
    ({"images": [_b64(b"GIF89a not really")], "labels": ["a"]}, 400, "not_an_image", "images[0]"),
    ({"images": [], "labels": ["a"]}, 422, "invalid_field", "images"),
    ({"images": ["AAAA"], "labels": ["a"], "k": 0}, 422, "invalid_field", "k"),
    ({"images": ["AAAA"], "labels": ["a"], "colour": 1}, 422, "invalid_field", "colour"),
    ({"images": ["AAAA"] * 5, "labels": ["a"]}, 413, "too_many_images", "5 > limit 4"),
    ({"images": ["AAAA"], "labels": ["a"] * 6}, 413, "too_many_labels", "6 > limit 5"),
    ({"images": [""], "labels": ["a", "b", "c", ""]}, 422, "empty_text", "labels[3]"),
    ({"images": ["AAAA"], "labels": ["a" * 41]}, 422, "text_too_long", "labels[0]"),
    ({"images": ["AAAA"], "labels": ["a"], "k": 11}, 422, "too_many_k", "11 > limit 10"),
])
def test_bad_requests_get_4xx_naming_the_problem(server, payload, status, reason, fragment):
    r = requests.post(f"{server}/v1/classify", json=payload, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["reason"] == reason and fragment in r.json()["detail"]


def test_image_limits_answer_413_and_broken_images_400_with_their_index(server, photos):
    big = _jpeg(Image.fromarray(np.random.default_rng(1).integers(0, 255, (600, 600, 3), dtype=np.uint8)))
    assert len(big) > 200_000
    bomb = io.BytesIO()
    Image.new("RGB", (1200, 1000)).save(bomb, format="PNG")  # 1.2 MP > 1 MP, a few KB
    cases = [(big, 413, "too_large"), (bomb.getvalue(), 413, "too_many_pixels"),
             (photos[0][: len(photos[0]) * 2 // 3], 400, "undecodable")]
    for data, status, reason in cases:
        r = requests.post(f"{server}/v1/embed", json={"images": [_b64(photos[1]), _b64(data)]}, timeout=60)
        assert (r.status_code, r.json().get("reason")) == (status, reason), (reason, r.text[:300])
        assert "images[1]" in r.json()["detail"]
    r = requests.post(f"{server}/v1/embed", data=b"x" * 2_100_000, headers={"content-type": "application/json"},
                      timeout=60)
    assert r.status_code == 413 and r.json()["reason"] == "body_too_large"
    r = requests.post(f"{server}/v1/embed", data=b"{not json", headers={"content-type": "application/json"},
                      timeout=60)
    assert r.status_code == 422
    r = requests.post(f"{server}/v1/embed", data=b"hello", headers={"content-type": "text/plain"}, timeout=60)
    assert r.status_code == 415
    strip = io.BytesIO()
    Image.new("RGB", (10, 900)).save(strip, format="PNG")  # proportions no crop should blow up
    r = requests.post(f"{server}/v1/embed", json={"images": [_b64(strip.getvalue())]}, timeout=60)
    assert (r.status_code, r.json()["reason"]) == (400, "extreme_aspect_ratio")
    files = [("images", (f"{i}.jpg", photos[0], "image/jpeg")) for i in range(5)]
    r = requests.post(f"{server}/v1/classify", files=files, data={"labels": ["a"]}, timeout=60)
    assert (r.status_code, r.json()["reason"]) == (413, "too_many_images"), r.text


@pytest.mark.parametrize("name", list(HOSTILE_EXPECTED))
def test_hostile_images_get_the_answer_docs_reliability_lists(server, name):
    _, data = hostile_images()[name]
    r = requests.post(f"{server}/v1/embed", files=[("images", ("x", data, "application/octet-stream"))], timeout=60)
    expected = HOSTILE_EXPECTED[name][2]
    got = str(r.status_code) if r.ok else f"{r.status_code}:{r.json()['reason']}"
    assert got == expected, r.text[:300]
    if not r.ok:
        assert r.json()["detail"].startswith("images[0]")


def test_label_and_text_limits_are_separate(server, photos):
    labels = ["a red shape", "a blue shape", "a green shape", "a grey shape"]  # 4 <= 5 labels, > 3 texts
    r = requests.post(f"{server}/v1/classify", json={"images": [_b64(photos[0])], "labels": labels}, timeout=60)
    assert r.status_code == 200, r.text
    r = requests.post(f"{server}/v1/embed", json={"texts": labels}, timeout=60)
    assert (r.status_code, r.json()["reason"]) == (413, "too_many_texts")
    r = requests.post(f"{server}/v1/embed", json={"texts": ["ok", "x" * 41]}, timeout=60)
    assert r.status_code == 422 and "texts[1]" in r.json()["detail"]


def test_api_key_is_required_when_configured(server, photos):
    body = {"texts": ["Aves"]}
    assert requests.post(f"{server}/secure/v1/embed", json=body, timeout=60).status_code == 401
    wrong = requests.post(f"{server}/secure/v1/embed", json=body, timeout=60,
                          headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    ok = requests.post(f"{server}/secure/v1/embed", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200
    assert requests.get(f"{server}/secure/healthz", timeout=60).status_code == 200  # probes stay open


def test_a_wrong_key_is_never_echoed_back(server):
    sent = f"{API_KEY}-but-wrong"
    r = requests.post(f"{server}/secure/v1/embed", json={"texts": ["Aves"]}, timeout=60,
                      headers={"Authorization": f"Bearer {sent}"})
    assert r.status_code == 401 and sent not in r.text and API_KEY not in r.text
    assert not any(API_KEY in v for v in r.headers.values())


def test_a_key_file_guards_the_service_and_a_rotated_key_works_without_a_restart(server, key_file):
    def embed(key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{server}/guarded/v1/embed", json={"texts": ["Aves"]}, timeout=60,
                             headers=headers).status_code

    assert (embed(None), embed(API_KEY)) == (401, 200)
    rotated = f"{API_KEY}-rotated"
    key_file.write_text(rotated)
    assert (embed(API_KEY), embed(rotated)) == (401, 200)


def test_a_client_past_its_rate_gets_429_with_retry_after_and_other_clients_do_not(server, key_file):
    key = "sk-linnaeus-rate-client-1"
    key_file.write_text(key)
    auth = {"Authorization": f"Bearer {key}"}
    body = {"texts": ["Aves"]}
    # one after another: each answer releases the in-flight slot (cap 1), so only the rate refuses
    codes = [requests.post(f"{server}/guarded/v1/embed", json=body, timeout=60, headers=auth).status_code
             for _ in range(4)]
    assert codes == [200] * 4
    refused = requests.post(f"{server}/guarded/v1/embed", json=body, timeout=60, headers=auth)
    assert refused.status_code == 429 and refused.json()["reason"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20 and "requests/s" in refused.json()["detail"]
    key_file.write_text(other := "sk-linnaeus-rate-client-2")  # another client: its own bucket
    assert requests.post(f"{server}/guarded/v1/embed", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_concurrent_requests_share_model_batches(server, photos):
    from ray import serve

    def one(i):
        return requests.post(f"{server}/v1/embed", json={"images": [_b64(photos[i % len(photos)])]}, timeout=60)

    with cf.ThreadPoolExecutor(8) as pool:
        assert all(r.status_code == 200 for r in pool.map(one, range(8)))
    handle = serve.get_deployment_handle("ModelServer", app_name="open")
    sizes = handle.batch_sizes.remote().result()
    assert max(sizes) > 1, sizes


def test_an_overloaded_ingress_answers_503_with_retry_after_instead_of_queueing_without_bound(
        server, model_dir, photos):
    from ray import serve

    from linnaeus.config import ServeLimits
    from serve.ingress import Ingress
    from serve.model import ModelServer

    assert Ingress.max_queued_requests > 0  # the service's own default is bounded too
    # the same deployments with room for 2 requests in flight and 1 waiting, and slow batches
    model = ModelServer.options(ray_actor_options={"num_cpus": 0.05}, num_replicas=1, autoscaling_config=None,
                                user_config={"max_batch_size": 16, "batch_wait_timeout_s": 3.0},
                                ).bind(model_dir, None, 10, None, 0)
    busy = Ingress.options(ray_actor_options={"num_cpus": 0.05}, num_replicas=1, autoscaling_config=None,
                           max_ongoing_requests=2, max_queued_requests=1).bind(ServeLimits(), None, None, model)
    serve.run(busy, name="busy", route_prefix="/busy")
    try:
        def one(i):
            time.sleep(0.3 * i if i < 3 else 1.0)  # three fill the room one by one, then a burst of nine
            return requests.post(f"{server}/busy/v1/embed", json={"images": [_b64(photos[i % len(photos)])]},
                                 timeout=60)

        with cf.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
        statuses = [r.status_code for r in answers]
        # without the bound all twelve would wait their turn and answer 200
        assert statuses[:3] == [200, 200, 200] and 503 in statuses[3:] and set(statuses) <= {200, 503}, statuses
        for r in answers:
            if r.status_code == 503:
                assert r.headers.get("retry-after") == "1" and r.text.startswith("Request dropped due to backpressure")
    finally:
        serve.delete("busy")


def test_a_request_larger_than_the_batch_limit_is_split_and_keeps_its_order(server, photos):
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name="open")
    single = [requests.post(f"{server}/v1/embed", json={"images": [_b64(p)]}, timeout=60).json()["embeddings"][0]
              for p in photos[:3]]
    handle.reconfigure.remote({"max_batch_size": 2}).result()
    try:  # the app's limit is 4 images per request
        r = requests.post(f"{server}/v1/embed", json={"images": [_b64(p) for p in photos[:3]]}, timeout=60)
        sizes = handle.batch_sizes.remote().result()
    finally:
        handle.reconfigure.remote(BATCHING).result()
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), np.array(single), atol=1e-5)
    assert sizes and max(sizes) <= 2 and sum(sizes) == 3, sizes


def test_answers_say_where_the_ingress_spent_its_time(server, photos):
    from linnaeus.serving.timing import parse_server_timing

    r = requests.post(f"{server}/v1/embed", json={"images": [_b64(photos[0])]}, timeout=60)
    timings = parse_server_timing(r.headers["server-timing"])
    assert set(timings) == {"parse", "decode", "model", "ingress"}, r.headers["server-timing"]
    assert all(v >= 0 for v in timings.values())
    assert timings["ingress"] >= timings["decode"] + timings["model"]
    # a refusal says how far the request got: this one was parsed, then refused for its k
    r = requests.post(f"{server}/v1/classify", json={"images": [_b64(photos[0])], "labels": ["a"], "k": 1000},
                      timeout=60)
    assert r.status_code == 422
    assert set(parse_server_timing(r.headers["server-timing"])) == {"parse", "ingress"}, r.headers


def test_label_embeddings_are_cached_across_requests(server, photos):
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name="open")
    labels = ["a moth on bark", "a fern frond"]
    before = handle.cache_stats.remote().result()
    for _ in range(2):
        r = requests.post(f"{server}/v1/classify", json={"images": [_b64(photos[0])], "labels": labels},
                          timeout=60)
        assert r.status_code == 200
    after = handle.cache_stats.remote().result()
    assert after["misses"] - before["misses"] == 2 and after["hits"] - before["hits"] == 2


def test_health_and_openapi_list_every_endpoint(server):
    health = requests.get(f"{server}/healthz", timeout=60).json()
    assert health["status"] == "ok" and health["arch"] == "linnaeus-tiny" and health["bank_taxa"] == 12
    spec = requests.get(f"{server}/openapi.json", timeout=60).json()
    assert {"/v1/classify", "/v1/taxonomy", "/v1/embed", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert requests.get(f"{server}/docs", timeout=60).status_code == 200


def test_haproxy_answers_http_on_127_0_0_1_in_front_of_the_ingress(server):
    import psutil

    from linnaeus.bench.loadgen import http_front

    port = int(server.rsplit(":", 1)[1])
    assert http_front(port) == "haproxy"
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid]
    front = [c for c in listening if c.laddr.port == port]
    assert front and {c.laddr.ip for c in front} == {"127.0.0.1"}
    # each ingress replica answers HTTP itself, on a port of Serve's direct-ingress range, same host
    own = [c for c in listening if 30000 <= c.laddr.port < 31000
           and "Ingress" in " ".join(psutil.Process(c.pid).cmdline())]
    assert len(own) >= 3 and {c.laddr.ip for c in own} == {"127.0.0.1"}  # one per application


def _replicas(app: str) -> int:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    states = serve.status().applications[app].deployments["ModelServer"].replica_states
    return states.get(ReplicaState.RUNNING, 0)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_load_scales_the_model_up_and_idling_scales_it_down(server, photos):
    assert _replicas("scaling") == 1
    stop = threading.Event()

    def client():
        while not stop.is_set():
            requests.post(f"{server}/scaling/v1/embed", json={"images": [_b64(photos[0])]}, timeout=60)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: _replicas("scaling") == 2, 90, "a second model replica under load")
    finally:
        stop.set()
        for t in threads:
            t.join()
    _wait_for(lambda: _replicas("scaling") == 1, 90, "the model to scale back to one replica when idle")


def test_prometheus_endpoint_exports_the_service_metrics(server, photos, metrics_port):
    from serve.metrics import exported_names

    requests.post(f"{server}/v1/classify", json={"images": ["@@"], "labels": ["a"]}, timeout=60)  # an error
    for _ in range(2):  # a miss, then a hit, in the label cache
        requests.post(f"{server}/v1/classify", json={"images": [_b64(photos[0])], "labels": ["a", "b"]}, timeout=60)
    expected = exported_names()

    def exported() -> set[str]:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}

    _wait_for(lambda: expected <= exported(), 60, "every project series on the Prometheus endpoint")
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'reason="bad_base64"' in text and "ray_serve_num_http_requests" in text
    # Ray Serve's own series that the Grafana dashboard plots exist under those names in Ray 2.60
    import json
    import re
    from pathlib import Path

    dashboard = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards" / "linnaeus.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    ray_serve = {n for e in exprs for n in re.findall(r"\b(ray_serve_[a-z0-9_]+)", e)}
    assert ray_serve and ray_serve <= exported(), ray_serve - exported()


# --- the API fuzzed from its own OpenAPI schema --------------------------------------------------------

FUZZED = [("POST", "/v1/classify"), ("POST", "/v1/taxonomy"), ("POST", "/v1/embed"), ("GET", "/healthz")]


@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json", timeout=60)
    schema.config.update(base_url=server)
    return schema


def test_the_fuzzed_operations_are_every_operation_the_schema_lists(api_schema):
    listed = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert listed == set(FUZZED)


@pytest.mark.parametrize("method,path,mode", [(m, p, mode) for m, p in FUZZED for mode in ("positive", "negative")
                                              if m == "POST" or mode == "positive"])  # a GET without parameters
def test_fuzzed_requests_never_get_a_5xx_and_every_refusal_names_its_reason(api_schema, method, path, mode):
    # schemathesis draws requests from the live OpenAPI schema: bodies that fit it ("positive") and
    # bodies that do not ("negative": wrong types, missing or extra fields), JSON and multipart
    from schemathesis.generation import GenerationMode

    operation = api_schema[path][method]
    answers: list[int] = []

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=50, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def one(case):
        response = case.call(timeout=60)
        answers.append(response.status_code)
        assert response.status_code < 500, (case.body, response.status_code, response.text[:300])
        if response.status_code >= 400:
            body = response.json()
            assert body.get("reason") and body.get("detail"), (case.body, response.status_code, response.text[:300])

    one()
    assert answers  # the strategy produced requests
    print(path, mode, sorted(Counter(answers).items()))  # what the fuzzer reached, for the docs (-s)
