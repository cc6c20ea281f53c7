"""URIs to pyarrow filesystems: plain paths, `file://` and `s3://` (AWS, MinIO, any S3 endpoint).

Notable:
- S3 settings come from the standard AWS environment (`AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`,
  `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_REGION`) unless an
  `S3Options` overrides them. Secrets are `SecretStr`, so they never show in a repr, a log or an error.
- Everything downstream speaks `(pyarrow FileSystem, path)`; Ray Data and pyarrow accept that pair
  directly, and the filesystem object pickles to Ray workers with its endpoint and credentials.
- S3 requests that fail transiently are retried by linnaeus.storage.s3, which counts them: a job that
  installs a listener (linnaeus.runtime.storage_retries) reports how many of its requests were repeated.
- Errors name the URI and the operation, never a credential.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from linnaeus.storage import s3


class StorageError(OSError):
    """An object-storage operation failed; the message names the URI."""


class S3Options(BaseModel):
    """S3 settings that override the AWS environment (all optional)."""

    model_config = ConfigDict(extra="forbid")
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None
    create_buckets: bool = True  # an ingest or checkpoint to a new bucket creates it (needs the right)
    # Tries per request on throttling, 5xx and connection errors, with backoff (linnaeus.storage.s3).
    # 3, the AWS SDK's default, lost a write in 34 with 10% of requests throttled (measured through
    # tests/faultproxy.py). 6 tries of a read that keeps failing took 4.2-5.1 s (tests/s3/test_s3_retries.py);
    # writes back off as boto3's standard mode does (random, up to 2^try s).
    retry_attempts: int = Field(6, ge=1, le=20)


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem, the path inside it, and the URI it came from (for messages)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts)])
        uri = "/".join([self.uri.rstrip("/"), *(p.strip("/") for p in parts)])
        return Location(self.fs, path, uri)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


RetryListener = s3.RetryListener
_listener: RetryListener | None = None


def set_retry_listener(listener: RetryListener | None) -> RetryListener | None:
    """Filesystems made from now on in this process tell `listener` of each retry (it travels with them
    when pickled); returns the one it replaces."""
    global _listener
    previous, _listener = _listener, listener
    return previous


def retry_listener() -> RetryListener | None:
    return _listener


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def s3_filesystem(options: S3Options | None = None, listener: RetryListener | None = None) -> pafs.PyFileSystem:
    """An S3 filesystem from `options`, falling back to the standard AWS environment variables; its
    retries go to `listener`, by default this process's (linnaeus.storage.s3)."""
    o = options or S3Options()
    endpoint = o.endpoint_url or _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    kwargs: dict = {"region": o.region or _env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
                    "allow_bucket_creation": o.create_buckets}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    access = o.access_key_id.get_secret_value() if o.access_key_id else _env("AWS_ACCESS_KEY_ID")
    secret = (o.secret_access_key.get_secret_value() if o.secret_access_key
              else _env("AWS_SECRET_ACCESS_KEY"))
    if access and secret:
        kwargs["access_key"], kwargs["secret_key"] = access, secret
        token = o.session_token.get_secret_value() if o.session_token else _env("AWS_SESSION_TOKEN")
        if token:
            kwargs["session_token"] = token
    # an explicit profile goes to the handler only when no keys are given (it sets AWS_PROFILE for pyarrow)
    profile = None if "access_key" in kwargs else o.profile
    return pafs.PyFileSystem(s3.S3Handler(kwargs, o.retry_attempts, listener or _listener, profile))


def resolve(uri: str | os.PathLike, s3: S3Options | None = None) -> Location:
    """Resolve a plain path, `file://` URI or `s3://bucket/key` URI."""
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text}: an s3:// URI needs a bucket (s3://bucket/prefix)")
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        return Location(s3_filesystem(s3), path, text.rstrip("/"))
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else text
        absolute = os.path.abspath(os.path.expanduser(local))
        return Location(pafs.LocalFileSystem(), absolute, absolute)
    raise StorageError(f"{text}: unsupported URI scheme {parsed.scheme!r} (use a path, file:// or s3://)")


def _fail(loc: Location, action: str, exc: BaseException) -> StorageError:
    # pyarrow's S3 errors carry the AWS error text, never the keys; keep the URI, drop the rest of the chain.
    return StorageError(f"{loc.uri}: cannot {action}: {exc}")


def read_bytes(loc: Location) -> bytes:
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()
    except OSError as exc:
        raise _fail(loc, "read", exc) from None


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole object. Readers never see it half-written: an S3 PUT is atomic, and local files
    are written beside the target and renamed over it."""
    try:
        if loc.is_s3:
            with loc.fs.open_output_stream(loc.path) as f:
                f.write(data)
            return
        loc.fs.create_dir(loc.path.rsplit("/", 1)[0], recursive=True)
        partial = f"{loc.path}.partial-{uuid.uuid4().hex[:8]}"
        with loc.fs.open_output_stream(partial) as f:
            f.write(data)
        loc.fs.move(partial, loc.path)
    except OSError as exc:
        raise _fail(loc, "write", exc) from None


def exists(loc: Location) -> bool:
    try:
        return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise _fail(loc, "stat", exc) from None


def list_files(loc: Location, recursive: bool = False) -> list[pafs.FileInfo]:
    """Files under a directory/prefix (sorted by path); empty when it does not exist."""
    try:
        selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
        infos = loc.fs.get_file_info(selector)
    except OSError as exc:
        raise _fail(loc, "list", exc) from None
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def move(src: Location, dst: Location) -> None:
    """Rename an object or file (same filesystem); an S3 move is a copy then a delete."""
    try:
        src.fs.move(src.path, dst.path)
    except OSError as exc:
        raise _fail(src, f"move to {dst.uri}", exc) from None


def delete(loc: Location) -> None:
    try:
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _fail(loc, "delete", exc) from None


def ensure_bucket(loc: Location) -> None:
    """Create the bucket of an s3:// location if missing (local folders: create the directory)."""
    try:
        if loc.is_s3:
            bucket = loc.path.split("/", 1)[0]
            if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                loc.fs.create_dir(bucket)
        else:
            loc.fs.create_dir(loc.path, recursive=True)
    except OSError as exc:
        raise _fail(loc, "create", exc) from None
