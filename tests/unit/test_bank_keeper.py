"""The service's label bank kept apart from the model, without Ray: a store that fails (any OSError, as
pyarrow raises mid-read) leaves it degraded and retried; a bank for other weights stops the retries
with the reason; at start such a bank fails the replica."""

from __future__ import annotations

import time

import pytest

from linnaeus.serving.bank import BankError
from linnaeus.serving.bank_keeper import BankKeeper


class FakePredictor:
    def __init__(self, failures: list[Exception]):
        self.failures, self.bank = failures, None

    def attach_bank(self, uri, s3):
        if self.failures:
            raise self.failures.pop(0)
        self.bank = "loaded"


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_failing_store_leaves_the_bank_degraded_then_loaded_by_the_retries():
    predictor = FakePredictor([OSError("connection refused"), OSError("Parquet read: reset by peer")])
    keeper = BankKeeper(predictor, "s3://banks/b", None, retry_s=0.05)
    assert predictor.bank is None and "connection refused" in keeper.error and "retried every 0.05 s" in keeper.error
    _wait(lambda: keeper.error is None)
    assert predictor.bank == "loaded" and keeper.error is None and keeper.attempts == 3


def test_a_bank_for_other_weights_stops_the_retries_and_says_why():
    predictor = FakePredictor([OSError("down"), BankError("built for model abc")])
    keeper = BankKeeper(predictor, "s3://banks/b", None, retry_s=0.05)
    _wait(lambda: "cannot be used" in (keeper.error or ""))
    assert "built for model abc" in keeper.error and predictor.bank is None
    attempts = keeper.attempts
    time.sleep(0.2)
    assert keeper.attempts == attempts  # no more retries


def test_at_start_a_bank_for_other_weights_fails_the_replica():
    with pytest.raises(BankError):
        BankKeeper(FakePredictor([BankError("built for model abc")]), "s3://banks/b", None, retry_s=1)
