"""S3 through pyarrow, with the retries done here so that they can be counted.

Notable:
- pyarrow's S3 client retries inside the AWS SDK and tells no one; a job under a throttling store could
  not say how many requests it repeated. Here the SDK tries once and this module retries: metadata
  calls, listings, deletes and copies are retried whole; reads are ranged GETs retried one range at a
  time (what the SDK would resend); writes go up through boto3 in 16 MB parts as they fill (one PUT
  at close for smaller objects), and boto3's standard retry mode resends one request, not the object,
  and reports its retries per request (`RetryAttempts`).
- Reads through pyarrow's PythonFile are serialised per open file (it locks around each ranged read):
  Parquet's concurrent pre-buffered reads of one file run one after another.
- Every retry is told, with its operation, to the filesystem's listener, which travels with the
  filesystem when Ray pickles it to a task or an actor (linnaeus.runtime's job tally).
- Transient means throttling, 5xx, and connection errors; a 4xx (missing key, access denied) fails at
  once, with pyarrow's message.
"""

from __future__ import annotations

import logging
import os
import random
import re
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
PART_BYTES = 16 << 20  # S3's parts are 5 MB at least; 10,000 of these make objects up to 160 GB
def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and bool(TRANSIENT.search(str(exc)))


class S3Handler(pafs.FileSystemHandler):
    """A pyarrow FileSystemHandler over an S3FileSystem that tries each request once."""

    def __init__(self, settings: dict, attempts: int, listener: RetryListener | None = None,
                 profile: str | None = None):
        self.settings, self.attempts, self.listener, self.profile = settings, attempts, listener, profile
        if profile:
            # pyarrow takes no profile argument: its AWS SDK reads AWS_PROFILE (and ~/.aws) when no keys
            # are given, so the profile goes through the environment, in every process the handler reaches
            os.environ["AWS_PROFILE"] = profile
        once = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
        self.fs = pafs.S3FileSystem(retry_strategy=once, **settings)

    def __reduce__(self):
        return S3Handler, (self.settings, self.attempts, self.listener, self.profile)

    def __repr__(self) -> str:  # never the keys
        return f"S3Handler(endpoint={self.settings.get('endpoint_override', 'aws')}, attempts={self.attempts})"

    def counted(self, operation: str, retries: int) -> None:
        if retries > 0 and self.listener is not None:
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
        """boto3's S3 client for uploads (one per process and settings)."""
        return _boto_client(self.settings, self.attempts, self.profile)

    # -- pyarrow's FileSystemHandler --
    def get_type_name(self) -> str:
        return "s3"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def __eq__(self, other) -> bool:  # what pyarrow asks when comparing filesystems
        return isinstance(other, S3Handler) and (other.settings, other.attempts) == (self.settings, self.attempts)

    def __hash__(self) -> int:
        return hash((self.settings.get("endpoint_override"), self.attempts))

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
    """A write-only file object: parts of PART_BYTES go up as they fill (an S3 multipart upload), and the
    object appears, whole, at close (an object under one part is a single PUT at close). boto3 resends a
    failed request itself and says how often (`RetryAttempts`), which is what is counted."""

    def __init__(self, handler: S3Handler, path: str, metadata: dict | None):
        bucket, _, key = path.partition("/")
        if not bucket or not key:
            raise OSError(f"{path}: an S3 object path is bucket/key")
        self.handler, self.bucket, self.key = handler, bucket, key
        self.extra = _extra_args(metadata)
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None
        self.written, self.closed, self.failed = 0, False, False

    def write(self, data) -> int:
        if self.failed:
            raise OSError(f"s3://{self.bucket}/{self.key}: an earlier part of this upload failed")
        size = len(memoryview(data).cast("B"))
        self.buffer += data
        self.written += size
        while len(self.buffer) >= PART_BYTES:
            self._send_part(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]
        return size

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.failed:  # the failure was raised where it happened; nothing of it may appear now
            return
        try:
            if self.upload_id is None:
                self._call("put_object", Body=bytes(self.buffer), **self.extra)
            else:
                if self.buffer:  # the last part may be smaller than S3's 5 MB minimum
                    self._send_part(bytes(self.buffer))
                self._call("complete_multipart_upload", UploadId=self.upload_id,
                           MultipartUpload={"Parts": self.parts})
        except OSError:
            raise
        except Exception as exc:
            self._abort()
            raise OSError(f"When uploading key '{self.key}' in bucket '{self.bucket}': {exc}") from None
        finally:
            self.buffer = bytearray()

    def _send_part(self, body: bytes) -> None:
        try:
            if self.upload_id is None:
                self.upload_id = self._call("create_multipart_upload", **self.extra)["UploadId"]
            number = len(self.parts) + 1
            etag = self._call("upload_part", UploadId=self.upload_id, PartNumber=number, Body=body)["ETag"]
            self.parts.append({"ETag": etag, "PartNumber": number})
        except Exception as exc:
            self.failed = True
            self._abort()
            raise OSError(f"When uploading part {len(self.parts) + 1} of key '{self.key}' in bucket "
                          f"'{self.bucket}': {exc}") from None

    def _call(self, method: str, **kwargs) -> dict:
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        try:
            answer = getattr(self.handler.client(), method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            self.handler.counted("write", int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)))
            raise
        except (ConnectionError, HTTPClientError):  # retried by boto3 until its tries ran out
            self.handler.counted("write", self.handler.attempts - 1)
            raise
        self.handler.counted("write", int(answer.get("ResponseMetadata", {}).get("RetryAttempts", 0)))
        return answer

    def _abort(self) -> None:
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                self.handler.client().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
            except Exception as exc:  # the bucket's lifecycle rules clean up what is left
                log.warning("s3://%s/%s: could not abort the failed upload: %s", self.bucket, self.key, exc)


# pyarrow's header names -> boto3's arguments; anything else is user metadata (x-amz-meta-*)
_HEADERS = {"content-type": "ContentType", "content-language": "ContentLanguage", "expires": "Expires",
            "content-disposition": "ContentDisposition", "content-encoding": "ContentEncoding",
            "cache-control": "CacheControl", "acl": "ACL"}


def _extra_args(metadata: dict | None) -> dict:
    extra: dict = {}
    for key, value in (metadata or {}).items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if name.lower() in _HEADERS:
            extra[_HEADERS[name.lower()]] = text
        else:
            extra.setdefault("Metadata", {})[name] = text
    return extra


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def _boto_client(settings: dict, attempts: int, profile: str | None):
    """One boto3 S3 client per process and settings (clients are thread-safe; building one is slow)."""
    key = (tuple(sorted((k, str(v)) for k, v in settings.items())), attempts, profile)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(settings, attempts, profile)
        return _clients[key]


def _new_client(settings: dict, attempts: int, profile: str | None):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    endpoint = settings.get("endpoint_override")
    return session.client(
        "s3", region_name=settings.get("region"),
        endpoint_url=f"{settings.get('scheme', 'https')}://{endpoint}" if endpoint else None,
        aws_access_key_id=settings.get("access_key"), aws_secret_access_key=settings.get("secret_key"),
        aws_session_token=settings.get("session_token"),
        # path-style against an endpoint of one's own (MinIO, moto), as pyarrow addresses it; no checksums,
        # as pyarrow sends none: S3-compatible stores that lack the newer ones keep working
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                      s3={"addressing_style": "path" if endpoint else "auto"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))
