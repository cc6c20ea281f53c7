"""S3 retries done and counted by linnaeus.storage.s3 (no Ray): moto's S3 server behind the fault proxy,
which answers a share of requests `503 SlowDown` and counts them. Every injected failure is one retry,
counted under its operation; a 4xx is never retried; a store that stays down fails after the budget."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from linnaeus import storage
from linnaeus.storage import s3
from tests.credentials import S3_ACCESS_KEY, S3_SECRET
from tests.faultproxy import FaultProxy


class Tally:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, operation: str, retries: int) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + retries

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@pytest.fixture(scope="module")
def proxy():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fault = FaultProxy(f"http://{host}:{port}", seed=11).start()
    yield fault
    fault.stop()
    server.stop()


@pytest.fixture
def bucket(proxy):
    """A fresh prefix on a filesystem that reports to a Tally; the proxy healthy, its counts zeroed."""
    proxy.fail_rate, proxy.injected, proxy.forwarded = 0.0, 0, 0
    tally = Tally()
    previous = storage.set_retry_listener(tally)
    try:
        opts = storage.S3Options(endpoint_url=proxy.endpoint, access_key_id=S3_ACCESS_KEY,
                                 secret_access_key=S3_SECRET, region="us-east-1")
        loc = storage.resolve(f"s3://retries/{os.urandom(4).hex()}", opts)
    finally:
        storage.set_retry_listener(previous)
    storage.ensure_bucket(loc)
    return loc, tally


def test_every_injected_failure_is_retried_once_and_counted_by_operation(bucket, proxy):
    loc, tally = bucket
    proxy.fail_rate = 0.2
    blobs = {f"small-{i}.bin": os.urandom(100 * (i + 1)) for i in range(8)}
    blobs["multipart.bin"] = os.urandom(s3.PART_BYTES + (4 << 20))  # two parts, the last one short
    for name, data in blobs.items():
        storage.write_bytes(loc.join(name), data)
    table = pa.table({"n": list(range(20_000)), "s": [str(i) for i in range(20_000)]})
    pq.write_table(table, loc.join("t.parquet").path, filesystem=loc.fs, row_group_size=2_000)
    for name, data in blobs.items():
        assert storage.read_bytes(loc.join(name)) == data
    assert pq.read_table(loc.join("t.parquet").path, filesystem=loc.fs).equals(table)
    assert len(storage.list_files(loc)) == len(blobs) + 1
    storage.move(loc.join("small-0.bin"), loc.join("moved.bin"))
    storage.delete(loc.join("moved.bin"))
    assert not storage.exists(loc.join("moved.bin"))
    proxy.fail_rate = 0.0

    assert proxy.injected > 10 and tally.total == proxy.injected  # every failure was one retry, all counted
    assert {"read", "write"} <= set(tally.counts)


def test_a_client_error_is_not_retried(bucket, proxy):
    loc, tally = bucket
    with pytest.raises(storage.StorageError, match="missing.bin"):
        storage.read_bytes(loc.join("missing.bin"))
    assert tally.total == 0 and proxy.injected == 0


def test_a_store_that_stays_down_fails_after_the_budget_naming_the_uri(bucket, proxy):
    loc, tally = bucket
    storage.write_bytes(loc.join("a.bin"), b"x")
    proxy.fail_rate = 1.0
    start = time.monotonic()
    with pytest.raises(storage.StorageError) as info:
        storage.read_bytes(loc.join("a.bin"))
    elapsed = time.monotonic() - start
    proxy.fail_rate = 0.0
    attempts = storage.S3Options().retry_attempts
    assert f"{loc.uri}/a.bin: cannot read" in str(info.value) and "503" in str(info.value)
    assert proxy.injected == attempts and tally.counts == {"read": attempts - 1}
    assert elapsed < 30  # backed off, bounded: 0.2 s doubling, jittered


def test_a_multipart_upload_that_fails_is_aborted_and_leaves_no_object(bucket, proxy):
    loc, tally = bucket
    handler = loc.fs.handler
    two_tries = pafs.PyFileSystem(s3.S3Handler(handler.settings, 2, tally))
    with pytest.raises(OSError, match="part 2"):
        with two_tries.open_output_stream(loc.path + "/parts.bin") as f:
            f.write(os.urandom(s3.PART_BYTES))  # part 1 goes up as it fills
            proxy.fail_next = 2
            f.write(os.urandom(s3.PART_BYTES + 100))  # part 2 cannot: both tries fail
    assert proxy.fail_next == 0 and proxy.injected == 2
    assert not storage.exists(loc.join("parts.bin")) and tally.counts == {"write": 1}
    uploads = handler.client().list_multipart_uploads(Bucket="retries").get("Uploads", [])
    assert not [u for u in uploads if u["Key"].endswith("/parts.bin")]  # aborted, not left to linger


def test_a_failed_upload_leaves_no_object(bucket, proxy):
    loc, tally = bucket
    handler = loc.fs.handler
    two_tries = pafs.PyFileSystem(s3.S3Handler(handler.settings, 2, tally))  # boto3 backs off up to 20 s a try
    proxy.fail_rate = 1.0
    with pytest.raises(storage.StorageError, match="cannot write"):
        storage.write_bytes(storage.Location(two_tries, loc.path + "/never.bin", loc.uri + "/never.bin"), b"payload")
    proxy.fail_rate = 0.0
    assert not storage.exists(loc.join("never.bin")) and tally.counts == {"write": 1}
