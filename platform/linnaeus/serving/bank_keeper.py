"""The service's label bank, loaded apart from the model: when its object store cannot be read at start,
the service starts anyway (classify and embed need no bank), says why it is degraded, and keeps trying
in the background until the bank loads.

Only an unreachable store is waited out; a bank that does not fit the model (`BankError`) is a
configuration error and fails the replica at start, as before.
"""

from __future__ import annotations

import logging
import threading
import time

from linnaeus.serving.bank import BankError
from linnaeus.storage import S3Options

log = logging.getLogger(__name__)
# Tries per attempt: the keeper retries on its own schedule, so one attempt should fail fast (~0.6 s
# against a closed port) instead of taking the batch jobs' budget (~30 s).
ATTEMPT_TRIES = 2


class BankKeeper:
    def __init__(self, predictor, uri: str | None, s3: S3Options | None, retry_s: float):
        self.predictor, self.uri, self.retry_s = predictor, uri, retry_s
        self.s3 = (s3 or S3Options()).model_copy(update={"retry_attempts": ATTEMPT_TRIES})
        self.error: str | None = None
        self.attempts = 0
        if not self._attempt():
            threading.Thread(target=self._retry, daemon=True, name="label-bank-retry").start()

    def _attempt(self) -> bool:
        self.attempts += 1
        try:
            self.predictor.attach_bank(self.uri, self.s3)
        except BankError:
            raise
        except OSError as exc:  # StorageError, and pyarrow's own errors from a store failing mid-read
            self.error = f"label bank unavailable (attempt {self.attempts}, retried every {self.retry_s:g} s): {exc}"
            log.warning("%s", self.error)
            return False
        if self.error:
            log.warning("label bank loaded after %d attempts", self.attempts)
        self.error = None
        return True

    def _retry(self) -> None:
        while True:
            time.sleep(self.retry_s)
            try:
                if self._attempt():
                    return
            except Exception as exc:  # e.g. a bank that turned out to belong to other weights: stop, say why
                self.error = f"label bank {self.uri or '(beside the model)'} cannot be used: {exc}"
                log.error("%s", self.error)
                return
