"""The service under faults, behind HAProxy as deployed: a model replica and an ingress replica SIGKILLed
during a steady single-image load, and the label bank's object store down at start (moto behind
tests/faultproxy.py). What must hold: every request answers within a bound, failures are 503 with
Retry-After (never a 500), the replica is replaced and traffic recovers; with the store down the service
starts degraded and says why, and recovers when the store returns. Figures go to docs/reliability.md."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import requests

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.data.synthetic import draw, make_tree
from linnaeus.serving.bank import LabelBank, taxa_embeddings
from linnaeus.serving.predictor import Predictor
from tests.faultproxy import FaultProxy, free_port

HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
               # as infra/ and `make serve` run it: a request whose ingress died before answering is
               # replayed on another ingress replica (every /v1 endpoint is a pure function of its body)
               "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response"}
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
BOUND_S = 30  # no request may take longer, whatever is killed


@pytest.fixture(scope="module")
def moto():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("faults") / "model")
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", out)
    return out


@pytest.fixture(scope="module")
def bank_in_s3(model_dir, moto, monkeypatch_module):
    """The model's label bank, written to moto directly (the service will reach it through the proxy)."""
    from tests.credentials import S3_ACCESS_KEY, S3_SECRET

    for key, value in {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(key, value)  # inherited by the Ray processes started after
    from linnaeus import storage

    p = Predictor(model_dir, device="cpu", load_bank=False)
    taxa = [t.taxon for t in make_tree(6, seed=2)]
    emb = taxa_embeddings(p.model, p.tokenizer, taxa, ["taxonomic_common"], "single")
    uri = "s3://banks/faults"
    storage.ensure_bucket(storage.resolve(uri, storage.S3Options(endpoint_url=moto)))
    LabelBank(taxa, emb, {"model_digest": p.model_id, "dim": emb.shape[1]}).save(
        uri, storage.S3Options(endpoint_url=moto))
    return uri


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def store(moto):
    """The bank's store as the service sees it: down until a test brings it up."""
    proxy = FaultProxy(moto)  # not started: connections to its port are refused
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def service(model_dir, bank_in_s3, store, monkeypatch_module):
    import ray
    from ray import serve

    from serve.app import build_app

    for key, value in {**HAPROXY_ENV, **{k: str(free_port()) for k in HAPROXY_PORTS}}.items():
        monkeypatch_module.setenv(key, value)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        common = {"model": model_dir, "model_cpus": 0.1, "ingress_cpus": 0.1, "api_key_env": None}
        fixed = {"min_replicas": 1, "max_replicas": 1}
        serve.run(build_app({**common, "bank": None, "model_autoscaling": fixed,
                             "ingress_autoscaling": {"min_replicas": 2, "max_replicas": 2}}),
                  name="fault", route_prefix="/fault")
        serve.run(build_app({**common, "bank": bank_in_s3, "bank_retry_s": 1, "s3": {"endpoint_url": store.endpoint},
                             "model_autoscaling": fixed, "ingress_autoscaling": fixed}),
                  name="degraded", route_prefix="/degraded")
        yield f"http://127.0.0.1:{port}"
        serve.shutdown()
    finally:
        ray.shutdown()


# --- a steady load and what it saw -----------------------------------------------------------------------

@dataclass
class Answer:
    sent: float
    answered: float
    status: int  # 0: no answer within the bound
    retry_after: str | None
    reason: str | None


def _photo() -> str:
    buf = io.BytesIO()
    draw(make_tree(3, seed=1)[0], np.random.default_rng(0), size=64).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


class SteadyLoad:
    """`clients` threads, each sending one single-image request at a time until stopped."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.answers, self._stop = url, [], threading.Event()
        self._lock = threading.Lock()
        self._body = {"images": [_photo()]}
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(BOUND_S + 5)

    def _client(self):
        session = requests.Session()
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                r = session.post(self.url, json=self._body, timeout=BOUND_S)
                reason = r.json().get("reason") if r.headers.get("content-type", "").startswith("application/json") \
                    and not r.ok else (None if r.ok else r.text[:80])
                answer = Answer(sent, time.monotonic(), r.status_code, r.headers.get("retry-after"), reason)
            except requests.RequestException as exc:
                answer = Answer(sent, time.monotonic(), 0, None, type(exc).__name__)
            with self._lock:
                self.answers.append(answer)

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= t]

    def figures(self, killed_at: float) -> dict:
        """Requests answered after the kill, how many failed, and how long until traffic was normal again
        (the last answer that failed or took over a second)."""
        after = [a for a in self.answers if a.answered >= killed_at]
        bad = [a for a in after if a.status != 200]
        disturbed = [a.answered for a in after if a.status != 200 or a.answered - a.sent > 1.0]
        return {"requests": len(self.answers), "after_kill": len(after), "failed": len(bad),
                "statuses": sorted({a.status for a in self.answers}),
                "normal_again_after_s": round(max(disturbed, default=killed_at) - killed_at, 1),
                "slowest_s": round(max(a.answered - a.sent for a in after), 1)}


def _replica_pids(app: str, deployment: str) -> set[int]:
    import ray

    pids = set()
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == "serve" and entry["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#"):
            actor = ray.get_actor(entry["name"], namespace="serve")
            try:
                pids.add(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=10))
            except Exception:  # a replica already gone
                pass
    return pids


def _kill_under_load(service: str, deployment: str) -> tuple[dict, list[Answer]]:
    before = _replica_pids("fault", deployment)
    assert before, f"no {deployment} replica found"
    victim = sorted(before)[0]
    with SteadyLoad(f"{service}/fault/v1/embed") as load:
        time.sleep(2)  # steady state first
        assert load.answers and all(a.status == 200 for a in load.answers), load.answers[:3]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline, recovered = killed_at + 60, False
        while time.monotonic() < deadline and not recovered:  # replaced, and a clean stretch of traffic after it
            time.sleep(0.5)
            now = _replica_pids("fault", deployment)
            recent = load.since(time.monotonic() - 3)
            recovered = (victim not in now and len(now) == len(before) and bool(recent)
                         and all(a.status == 200 for a in recent) and time.monotonic() - killed_at > 5)
        answers = list(load.answers)
    assert recovered, "no clean 3 s of traffic within 60 s of the kill"
    figures = load.figures(killed_at)
    assert victim not in _replica_pids("fault", deployment) and len(_replica_pids("fault", deployment)) == len(before)
    return figures, answers


def _check_answers(answers: list[Answer]) -> None:
    assert all(a.status != 0 for a in answers), [a for a in answers if a.status == 0][:3]  # none hung
    assert all(a.answered - a.sent < BOUND_S for a in answers)
    failed = [a for a in answers if a.status != 200]
    assert all(a.status == 503 and a.retry_after for a in failed), failed[:5]


def test_a_model_replica_killed_under_load_costs_at_most_503s_with_retry_after_and_is_replaced(service):
    figures, answers = _kill_under_load(service, "ModelServer")
    _check_answers(answers)
    assert {a.reason for a in answers if a.status == 503} <= {"model_unavailable", "model_overloaded"}
    print("model replica killed:", figures)


def test_an_ingress_replica_killed_under_load_is_replayed_on_the_other_and_replaced(service):
    figures, answers = _kill_under_load(service, "Ingress")
    _check_answers(answers)
    assert figures["failed"] == 0  # replayed on the other ingress replica, not merely refused politely
    print("ingress replica killed:", figures)


def test_the_label_banks_store_down_at_start_leaves_the_service_degraded_until_it_returns(service, store, moto):
    health = requests.get(f"{service}/degraded/healthz", timeout=BOUND_S).json()
    assert health["status"] == "degraded" and "label bank unavailable" in health["reason"]
    assert "s3://banks/faults" in health["reason"]
    body = {"images": [_photo()], "rank": "species"}
    r = requests.post(f"{service}/degraded/v1/taxonomy", json=body, timeout=BOUND_S)
    assert r.status_code == 503 and r.json()["reason"] == "label_bank_unavailable" and r.headers["retry-after"]
    assert "s3://banks/faults" in r.json()["detail"]
    assert requests.post(f"{service}/degraded/v1/embed", json={"images": [_photo()]}, timeout=BOUND_S).ok

    store.up()
    back_at = time.monotonic()
    while time.monotonic() - back_at < 30:
        health = requests.get(f"{service}/degraded/healthz", timeout=BOUND_S).json()
        if health["status"] == "ok":
            break
        time.sleep(0.2)
    recovered = time.monotonic() - back_at
    assert health["status"] == "ok" and health["bank_taxa"] == 6 and health["reason"] is None
    r = requests.post(f"{service}/degraded/v1/taxonomy", json=body, timeout=BOUND_S)
    assert r.status_code == 200 and len(r.json()["results"][0]) >= 1
    print(f"label bank store returned: service ok {recovered:.1f} s later")
