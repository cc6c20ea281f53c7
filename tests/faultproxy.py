"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's S3 server, for the reliability tests.

`FaultProxy(upstream).start()` listens on a free port and forwards every request verbatim (headers,
body, the client's signature), unless told otherwise:
- `fail_rate`: that fraction of requests is answered `503 SlowDown` with S3's XML error body, the
  answer S3 gives when it throttles (clients retry it); `injected` counts them, `forwarded` the rest;
  `fail_next = n`: the next n requests are answered so;
- `down()`: connections are refused (the listening socket is closed), `up()` listens again on the
  same port: object storage unreachable, then back.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stalls
    proxy: "FaultProxy"

    def log_message(self, *args):  # quiet: the suite's logs are scanned and kept small
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self):
        body = self._body()
        if self.proxy.should_fail():
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        conn = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=60)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
            self.send_response(upstream.status, upstream.reason)
            for key, value in upstream.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = upstream.getheader("content-length") if self.command == "HEAD" else str(len(data))
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


class FaultProxy:
    def __init__(self, upstream: str, fail_rate: float = 0.0, seed: int = 0, port: int = 0):
        parsed = urlparse(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.fail_rate, self._rng, self._lock = fail_rate, random.Random(seed), threading.Lock()
        self.injected = self.forwarded = 0
        self.fail_next = 0  # the next this many requests fail, whatever fail_rate says
        self.port = port or free_port()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def should_fail(self) -> bool:
        with self._lock:
            fail = self.fail_next > 0 or self._rng.random() < self.fail_rate
            self.fail_next = max(0, self.fail_next - 1)
            if fail:
                self.injected += 1
            else:
                self.forwarded += 1
            return fail

    def start(self) -> "FaultProxy":
        handler = type("Handler", (_Handler,), {"proxy": self})
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    up = start

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    stop = down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
