"""S3 through pyarrow, with the retries done here so that they can be counted.

Notable:
- pyarrow's S3 client retries inside the AWS SDK and tells no one; a job under a throttling store could
  not say how many requests it repeated. Here the SDK tries once and this module retries: metadata
  calls, listings, deletes and copies are retried whole; reads are ranged GETs retried one range at a
  time (what the SDK would resend); writes are buffered (memory, then a temporary file) and uploaded at
  close by boto3, whose standard retry mode resends one part, not the object, and reports its retries
  per request (`RetryAttempts`).
- Every retry is counted per operation in this process and told to the filesystem's listener, which
  travels with the filesystem when Ray pickles it to a task or an actor (linnaeus.runtime's job tally).
- Transient means throttling, 5xx, and connection errors; a 4xx (missing key, access denied) fails at
  once, with pyarrow's message.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import tempfile
import threading
import time
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)
RetryListener = Callable[[str, int], None]  # (operation, retries): called as retries happen
TRANSIENT = re.compile(r"AWS Error (SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|NETWORK_CONNECTION|THROTTLING|"
                       r"REQUEST_TIMEOUT)|HTTP status 5\d\d")
BASE_DELAY_S, MAX_DELAY_S = 0.2, 20.0
SPOOL_BYTES = 64 << 20  # an upload larger than this is buffered in a temporary file, not in memory
_counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()


def process_retries() -> dict[str, int]:
    """Retries done in this process so far, per operation (every filesystem of this module)."""
    with _counts_lock:
        return dict(_counts)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and bool(TRANSIENT.search(str(exc)))


class S3Handler(pafs.FileSystemHandler):
    """A pyarrow FileSystemHandler over an S3FileSystem that tries each request once."""

    def __init__(self, settings: dict, attempts: int, listener: RetryListener | None = None,
                 profile: str | None = None):
        self.settings, self.attempts, self.listener, self.profile = settings, attempts, listener, profile
        once = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
        self.fs = pafs.S3FileSystem(retry_strategy=once, **settings)
        self._client = None
        self._client_lock = threading.Lock()

    def __reduce__(self):
        return S3Handler, (self.settings, self.attempts, self.listener, self.profile)

    def __repr__(self) -> str:  # never the keys
        return f"S3Handler(endpoint={self.settings.get('endpoint_override', 'aws')}, attempts={self.attempts})"

    def counted(self, operation: str, retries: int) -> None:
        if retries <= 0:
            return
        with _counts_lock:
            _counts[operation] += retries
        if self.listener is not None:
            try:
                self.listener(operation, retries)
            except Exception as exc:  # a tally that is gone must not fail the request that was saved
                log.debug("retry listener failed: %s", exc)

    def call(self, operation: str, fn: Callable):
        """`fn()` with up to `attempts` tries on transient errors, backing off with jitter."""
        for attempt in range(self.attempts):
            try:
                result = fn()
            except OSError as exc:
                if attempt + 1 >= self.attempts or not is_transient(exc):
                    raise
                log.debug("S3 %s: %s; try %d of %d", operation, str(exc).splitlines()[0], attempt + 2,
                          self.attempts)
                self.counted(operation, 1)
                time.sleep(min(MAX_DELAY_S, BASE_DELAY_S * 2 ** attempt) * random.uniform(0.5, 1.0))
            else:
                return result
        raise AssertionError("unreachable")

    def client(self):
        """boto3's S3 client for uploads, built once per process from the same settings."""
        with self._client_lock:
            if self._client is None:
                self._client = _boto_client(self.settings, self.attempts, self.profile, self.counted)
            return self._client

    # -- pyarrow's FileSystemHandler --
    def get_type_name(self) -> str:
        return "s3"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def equals(self, other) -> bool:
        return isinstance(other, S3Handler) and other.settings == self.settings

    def get_file_info(self, paths):
        return self.call("stat", lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector):
        return self.call("list", lambda: self.fs.get_file_info(selector))

    def create_dir(self, path, recursive):
        self.call("create", lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path):
        self.call("delete", lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.call("delete", lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self):
        self.call("delete", lambda: self.fs.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path):
        self.call("delete", lambda: self.fs.delete_file(path))

    def move(self, src, dest):
        # S3 has no rename: a copy, then a delete, each retried on its own (retrying pyarrow's move as
        # one would copy again a source its first try had already deleted)
        self.copy_file(src, dest)
        try:
            self.delete_file(src)
        except FileNotFoundError:
            pass

    def copy_file(self, src, dest):
        self.call("copy", lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def open_input_file(self, path):
        native = self.call("read", lambda: self.fs.open_input_file(path))
        return pa.PythonFile(_RangeReader(self, native), mode="r")

    def open_output_stream(self, path, metadata=None):
        return pa.PythonFile(_Upload(self, path, metadata), mode="w")

    def open_append_stream(self, path, metadata=None):
        raise OSError(f"{path}: S3 objects cannot be appended to")


class _RangeReader:
    """A file object over pyarrow's S3 input file: every read is one ranged GET, retried alone."""

    def __init__(self, handler: S3Handler, native: pa.NativeFile):
        self.handler, self.native, self.pos, self.closed = handler, native, 0, False
        self.size = native.size()

    def read(self, nbytes: int = -1) -> bytes:
        if nbytes is None or nbytes < 0:
            nbytes = self.size - self.pos
        nbytes = max(0, min(nbytes, self.size - self.pos))
        data = self.handler.call("read", lambda: self.native.read_at(nbytes, self.pos)) if nbytes else b""
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.native.close()
            self.closed = True


class _Upload:
    """A write-only file object: bytes are buffered and the object is uploaded at close, so a reader
    never sees it half-written and a failed request is resent without the caller knowing."""

    def __init__(self, handler: S3Handler, path: str, metadata: dict | None):
        bucket, _, key = path.partition("/")
        if not bucket or not key:
            raise OSError(f"{path}: an S3 object path is bucket/key")
        self.handler, self.bucket, self.key = handler, bucket, key
        self.extra = _extra_args(metadata)
        self.buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.closed = False

    def write(self, data) -> int:
        return self.buffer.write(data)

    def tell(self) -> int:
        return self.buffer.tell()

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.buffer.seek(0)
            self.handler.client().upload_fileobj(self.buffer, self.bucket, self.key, ExtraArgs=self.extra or None)
        except Exception as exc:
            raise OSError(f"When uploading key '{self.key}' in bucket '{self.bucket}': {exc}") from None
        finally:
            self.buffer.close()


def _extra_args(metadata: dict | None) -> dict:
    extra: dict = {}
    for key, value in (metadata or {}).items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if name.lower() == "content-type":
            extra["ContentType"] = text
        else:
            extra.setdefault("Metadata", {})[name] = text
    return extra


def _boto_client(settings: dict, attempts: int, profile: str | None, counted: Callable[[str, int], None]):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    endpoint = settings.get("endpoint_override")
    client = session.client(
        "s3", region_name=settings.get("region"),
        endpoint_url=f"{settings.get('scheme', 'https')}://{endpoint}" if endpoint else None,
        aws_access_key_id=settings.get("access_key"), aws_secret_access_key=settings.get("secret_key"),
        aws_session_token=settings.get("session_token"),
        # pyarrow sends no checksums either: S3-compatible stores that lack the newer ones keep working
        # path-style against an endpoint of one's own (MinIO, moto), as pyarrow addresses it
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                      s3={"addressing_style": "path" if endpoint else "auto"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))

    def after_call(parsed=None, **_):
        counted("write", int((parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts", 0)))

    client.meta.events.register("after-call.s3", after_call)
    return client
