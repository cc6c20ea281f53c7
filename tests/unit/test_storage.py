from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from linnaeus import storage


def test_plain_paths_and_file_uris_resolve_to_the_local_filesystem(tmp_path):
    for uri in (str(tmp_path), f"file://{tmp_path}"):
        loc = storage.resolve(uri)
        assert isinstance(loc.fs, pafs.LocalFileSystem) and loc.path == str(tmp_path)


def test_s3_uris_take_endpoint_and_keys_from_the_aws_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    loc = storage.resolve("s3://bucket/some/prefix/")
    assert loc.fs.type_name == "py::s3" and loc.path == "bucket/some/prefix"
    settings = loc.fs.handler.settings  # what travels to Ray workers when the fs is pickled
    assert settings["endpoint_override"] == "127.0.0.1:9000" and settings["scheme"] == "http"
    assert settings["access_key"] == "AKIDEXAMPLE"


def test_options_override_environment_and_never_show_secrets(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    opts = storage.S3Options(endpoint_url="http://127.0.0.1:1", access_key_id="AKID",
                             secret_access_key="very-secret-value", retry_attempts=1)
    assert "very-secret-value" not in repr(opts) and "very-secret-value" not in str(opts.model_dump())
    loc = storage.resolve("s3://bucket/x", opts)
    with pytest.raises(storage.StorageError) as info:  # nothing listens on port 1
        storage.read_bytes(loc.join("missing.json"))
    assert "s3://bucket/x/missing.json" in str(info.value)
    assert "very-secret-value" not in str(info.value) and "AKID" not in str(info.value)


@pytest.mark.parametrize("uri, message", [("gs://b/x", "unsupported URI scheme 'gs'"),
                                          ("s3:///nobucket", "needs a bucket")])
def test_unsupported_uris_are_refused(uri, message):
    with pytest.raises(storage.StorageError, match=message):
        storage.resolve(uri)


def test_local_round_trip_listing_and_delete(tmp_path):
    root = storage.resolve(tmp_path)
    storage.write_bytes(root.join("a/b.bin"), b"123")
    assert storage.read_bytes(root.join("a/b.bin")) == b"123" and storage.exists(root.join("a/b.bin"))
    assert [i.base_name for i in storage.list_files(root, recursive=True)] == ["b.bin"]
    storage.delete(root.join("a/b.bin"))
    assert not storage.exists(root.join("a/b.bin")) and storage.list_files(root.join("nope")) == []


def test_an_explicit_profile_wins_over_the_environment(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "from-env")
    storage.s3_filesystem(storage.S3Options(profile="from-config"))
    assert os.environ["AWS_PROFILE"] == "from-config"


class _Tally:
    def __init__(self):
        self.calls = []

    def __call__(self, operation, retries):
        self.calls.append((operation, retries))


def test_the_s3_retry_budget_and_listener_survive_pickling_to_ray_workers():
    import pickle

    previous = storage.set_retry_listener(_Tally())
    try:
        fs = storage.s3_filesystem(storage.S3Options(endpoint_url="http://127.0.0.1:9", retry_attempts=7,
                                                     access_key_id="AKID", secret_access_key="very-secret-value"))
    finally:
        storage.set_retry_listener(previous)
    copy = pickle.loads(pickle.dumps(fs))  # as Ray Data ships it to a read or write task
    assert copy.handler.attempts == 7 and isinstance(copy.handler.listener, _Tally)
    assert copy.equals(fs) and not copy.equals(storage.s3_filesystem())  # pyarrow compares the handlers
    assert storage.s3_filesystem().handler.attempts == storage.S3Options().retry_attempts == 6
    for text in (repr(copy), str(copy), repr(copy.handler)):
        assert "very-secret-value" not in text
