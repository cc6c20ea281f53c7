"""An S3 server (moto's, real wire protocol) on 127.0.0.1 for the module, then a local Ray that
inherits its endpoint and credentials through the standard AWS environment variables.

A module that sets `S3_FAIL_RATE` talks to moto through tests/faultproxy.py instead, which answers that
fraction of requests `503 SlowDown` (S3 throttling); `s3_faults` is the proxy, for its counts."""

from __future__ import annotations

import os

import pytest

from tests.credentials import S3_ACCESS_KEY, S3_SECRET

CREDENTIALS = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_faults(request):
    from moto.server import ThreadedMotoServer

    from tests.faultproxy import FaultProxy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy(f"http://{host}:{port}", fail_rate=getattr(request.module, "S3_FAIL_RATE", 0.0), seed=7)
    yield proxy if proxy.fail_rate else None, f"http://{host}:{port}"
    proxy.stop()
    server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(s3_faults):
    proxy, endpoint = s3_faults
    if proxy is not None:
        endpoint = proxy.start().endpoint
    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_s3(s3_endpoint):
    import gc

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield s3_endpoint
    gc.collect()  # finalise dataset iterators so their executor threads stop before Ray does
    ray.shutdown()
