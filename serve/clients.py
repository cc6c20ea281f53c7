"""Per-client limits at the ingress: a request rate (token bucket) and a cap on requests in flight.

Notable:
- A client is its API key when one is sent (hashed: the key itself is never held as a dict key or
  logged), else the first address of `X-Forwarded-For`, else the peer address. With one service-wide
  key every client shares one bucket (issue a key per team to tell them apart); without auth the
  address can be spoofed through that header, and behind a proxy that sets none the peer is the proxy:
  the limits then guard against accidents (a runaway batch job), not adversaries.
- Limits hold per ingress replica: with R replicas a client may get up to R times the rate. A refusal
  is a 429 with `Retry-After` in whole seconds (when the next token is due, or 1 for the cap).
- At most `max_clients` buckets are held (the least recently seen go first), so memory stays bounded
  under address churn; a forgotten client starts again with a full burst.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    retry_after_s: int


def client_id(authorization: str, forwarded_for: str, peer: str | None) -> str:
    token = authorization.partition(" ")[2].strip()
    if token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    first = forwarded_for.split(",")[0].strip()
    return "addr:" + (first or peer or "unknown")


class ClientLimiter:
    def __init__(self, rate: float, burst: int, concurrency: int, max_clients: int = 10_000, clock=time.monotonic):
        self.rate, self.burst, self.concurrency = rate, burst, concurrency
        self.max_clients, self._clock = max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when counted)
        self._in_flight: dict[str, int] = {}

    def admit(self, client: str) -> Refusal | None:
        """None, and the request counts as in flight until `release(client)`; or why not."""
        if self.rate > 0:
            refusal = self._take_token(client)
            if refusal:
                return refusal
        if self.concurrency > 0:
            if self._in_flight.get(client, 0) >= self.concurrency:
                return Refusal("too_many_in_flight", f"more than {self.concurrency} requests in flight from this "
                                                     "client; wait for an answer before sending more", 1)
            self._in_flight[client] = self._in_flight.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        if self.concurrency > 0:
            left = self._in_flight.get(client, 0) - 1
            if left > 0:
                self._in_flight[client] = left
            else:
                self._in_flight.pop(client, None)

    def _take_token(self, client: str) -> Refusal | None:
        now = self._clock()
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1 - tokens) / self.rate)
            return Refusal("rate_limited", f"more than {self.rate:g} requests/s (burst {self.burst}) from this "
                                           f"client; retry in {wait} s", wait)
        self._buckets[client] = (tokens - 1, now)
        self._buckets.move_to_end(client)  # least recently seen first
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return None
