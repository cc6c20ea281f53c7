"""The API key: read from a file (a mounted Kubernetes secret) or an environment variable, compared in
constant time.

Notable:
- A key file is re-read when its modification time changes, so a rotated secret takes effect on the
  next request without a restart (Kubernetes updates mounted secrets in place). A file that is missing
  or empty at start fails the replica naming the path; one that disappears later keeps the last key
  (a half-finished rotation must not open the service).
- The key never appears in an error, a log line or a repr: tests/credentials.py scans the suite's logs.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path


class ApiKey:
    def __init__(self, env: str | None = None, file: str | None = None):
        self._file = Path(file) if file else None
        self._mtime: float | None = None
        self._key: bytes | None = None
        if self._file is not None:
            if not self._read():
                raise ValueError(f"api_key_file {self._file}: missing, unreadable or empty")
        elif env and os.environ.get(env, "").strip():  # only whitespace: not a key, auth stays off
            self._key = os.environ[env].strip().encode()

    def __repr__(self) -> str:
        source = f"file {self._file}" if self._file else "environment"
        return f"ApiKey({'on' if self._key else 'off'}, {source})"

    @property
    def required(self) -> bool:
        return self._key is not None

    def accepts(self, authorization: str) -> bool:
        """Whether an `Authorization` header value carries the key (always true when auth is off)."""
        self._refresh()
        if self._key is None:
            return True
        scheme, _, token = authorization.partition(" ")
        # compare_digest on equal-typed bytes: the time taken does not depend on where the token differs
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
        except OSError:
            return  # keep the last key
        if mtime != self._mtime:
            self._read()

    def _read(self) -> bool:
        try:
            mtime = self._file.stat().st_mtime
            key = self._file.read_text().strip().encode()
        except OSError:
            return False
        if not key:
            return False
        self._key, self._mtime = key, mtime
        return True
