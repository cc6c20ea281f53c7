"""The ingress's guards without Ray: the API key (file or environment, rotation, constant-time compare)
and the per-client rate and in-flight limits."""

from __future__ import annotations

import os

import pytest

from serve.auth import ApiKey
from serve.clients import ClientLimiter, client_id

KEY = "sk-guard-test-0b7e41"


def test_the_key_comes_from_the_environment_and_auth_is_off_without_it(monkeypatch):
    monkeypatch.setenv("GUARD_KEY", KEY)
    key = ApiKey(env="GUARD_KEY")
    assert key.required and key.accepts(f"Bearer {KEY}") and key.accepts(f"bearer  {KEY} ")
    assert not key.accepts(f"Bearer {KEY}x") and not key.accepts(KEY) and not key.accepts("")
    assert not key.accepts(f"Basic {KEY}")
    monkeypatch.delenv("GUARD_KEY")
    assert not ApiKey(env="GUARD_KEY").required and ApiKey(env="GUARD_KEY").accepts("")
    monkeypatch.setenv("GUARD_KEY", " \n")  # a secret holding only a newline is no key: auth is off, said so
    assert not ApiKey(env="GUARD_KEY").required


def test_a_key_file_wins_over_the_environment_and_a_rotation_takes_effect_without_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARD_KEY", "from-env")
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")  # a secret mounted from a file usually ends in a newline
    key = ApiKey(env="GUARD_KEY", file=str(path))
    assert key.accepts(f"Bearer {KEY}") and not key.accepts("Bearer from-env")
    path.write_text("rotated-key")
    os.utime(path, (1, 1))  # a new mtime even on file systems with coarse timestamps
    assert key.accepts("Bearer rotated-key") and not key.accepts(f"Bearer {KEY}")
    path.unlink()  # half-way through a rotation: the last key stays, the service does not open
    assert key.accepts("Bearer rotated-key") and not key.accepts("")


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_key_file_fails_at_start_naming_the_path(tmp_path, content):
    path = tmp_path / "api-key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=f"api_key_file {path}: missing, unreadable or empty"):
        ApiKey(file=str(path))


def test_the_key_never_shows_in_a_repr(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARD_KEY", KEY)
    assert KEY not in repr(ApiKey(env="GUARD_KEY")) and "on" in repr(ApiKey(env="GUARD_KEY"))


def test_a_client_is_its_key_hashed_else_its_forwarded_address_else_its_peer():
    by_key = client_id(f"Bearer {KEY}", "10.0.0.9", "127.0.0.1")
    assert by_key.startswith("key:") and KEY not in by_key
    assert by_key == client_id(f"Bearer {KEY}", "10.0.0.7", "127.0.0.2") != client_id("Bearer other", "", None)
    assert client_id("", "10.0.0.9, 172.16.0.1", "127.0.0.1") == "addr:10.0.0.9"
    assert client_id("", "", "127.0.0.1") == "addr:127.0.0.1"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_allows_a_burst_then_one_request_per_token_and_says_when_to_retry():
    clock = Clock()
    limiter = ClientLimiter(rate=0.5, burst=3, concurrency=0, clock=clock)
    assert [limiter.admit("a") for _ in range(3)] == [None, None, None]
    refusal = limiter.admit("a")
    assert refusal.reason == "rate_limited" and refusal.retry_after_s == 2 and "0.5 requests/s" in refusal.detail
    assert limiter.admit("b") is None  # another client has its own bucket
    clock.now += 1.0
    assert limiter.admit("a").retry_after_s == 1  # half a token so far
    clock.now += 1.0
    assert limiter.admit("a") is None and limiter.admit("a") is not None
    clock.now += 1000
    assert [limiter.admit("a") for _ in range(4)].count(None) == 3  # refills up to the burst, not beyond


def test_the_in_flight_cap_counts_until_release():
    limiter = ClientLimiter(rate=0, burst=1, concurrency=2)
    assert limiter.admit("a") is None and limiter.admit("a") is None
    refusal = limiter.admit("a")
    assert refusal.reason == "too_many_in_flight" and refusal.retry_after_s == 1
    assert limiter.admit("b") is None
    limiter.release("a")
    assert limiter.admit("a") is None
    for client in ("a", "a", "b"):
        limiter.release(client)
    assert limiter._in_flight == {}  # nothing left behind for clients that went away


def test_at_most_max_clients_are_held_and_the_least_recently_seen_go_first():
    limiter = ClientLimiter(rate=10, burst=2, concurrency=0, max_clients=100, clock=Clock())
    for i in range(100):
        limiter.admit(f"old-{i}")
    limiter.admit("old-0")  # seen again: now the most recent
    for i in range(1000):  # churn: addresses never seen twice
        limiter.admit(f"new-{i}")
    assert len(limiter._buckets) == 100 and "new-999" in limiter._buckets and "old-1" not in limiter._buckets


class _Method:
    def __init__(self, exc: Exception):
        self.exc = exc

    async def remote(self, *args):
        raise self.exc


@pytest.mark.parametrize("exc, reason", [
    ("died", "model_unavailable"), ("unavailable", "model_unavailable"), ("backpressure", "model_overloaded")])
def test_a_lost_or_full_model_deployment_is_a_503_with_retry_after_not_a_500(exc, reason):
    import asyncio

    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError, DeploymentID, DeploymentUnavailableError

    from serve.ingress import ApiError, _remote

    raised = {"died": ActorDiedError(), "unavailable": DeploymentUnavailableError(DeploymentID("ModelServer", "fault")),
              "backpressure": BackPressureError(num_queued_requests=128, max_queued_requests=128)}[exc]
    with pytest.raises(ApiError) as info:
        asyncio.run(_remote(_Method(raised)))
    assert (info.value.status, info.value.reason, info.value.retry_after_s) == (503, reason, 1)


def test_a_bug_in_the_model_deployment_is_not_disguised_as_unavailable():
    import asyncio

    from serve.ingress import _remote

    with pytest.raises(ZeroDivisionError):
        asyncio.run(_remote(_Method(ZeroDivisionError("a bug"))))
