"""Object storage over the real S3 wire protocol: ingest to and from s3://, stream from s3://."""

from __future__ import annotations

import json

import pytest

from linnaeus import storage
from linnaeus.config import IngestConfig, StreamConfig
from linnaeus.data import shards
from linnaeus.data.ingest import run_ingest
from linnaeus.data.stream import build_stream
from tests.credentials import S3_SECRET

pytestmark = pytest.mark.usefixtures("ray_s3")


def _upload(local_dir, uri):
    root = storage.resolve(uri)
    storage.ensure_bucket(root)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        storage.write_bytes(root.join(str(path.relative_to(local_dir))), path.read_bytes())


def test_ingest_local_folder_to_s3_then_stream_from_s3(synthetic_folder):
    result = run_ingest(IngestConfig(input=str(synthetic_folder), format="folder",
                                     output="s3://corpora/synthetic", shard_rows=40))
    root = storage.resolve("s3://corpora/synthetic")
    manifest = shards.read_manifest(root)
    assert result.rows == manifest.rows == 96 and len(manifest.shards) >= 3
    listed = {i.base_name for i in storage.list_files(root)}
    assert listed == {e.path for e in manifest.shards} | {"_manifest.json", "_report.json"}
    stream = build_stream(StreamConfig(data="s3://corpora/synthetic", image_size=32))
    keys = [k for b in stream.dataset.iter_batches(batch_size=32, batch_format="numpy")
            for k in b["sample_key"]]
    assert len(keys) == len(set(keys)) == 96


def test_ingest_from_s3_with_corrupt_files_reports_them(synthetic_folder, tmp_path):
    _upload(synthetic_folder, "s3://raw/synthetic")
    raw = storage.resolve("s3://raw/synthetic")
    folder = sorted({i.path.split("/")[-2] for i in storage.list_files(raw.join("images"), True)})[0]
    storage.write_bytes(raw.join(f"images/{folder}/broken.jpg"), b"\xff\xd8\xff\xe0 truncated")
    storage.write_bytes(raw.join(f"images/{folder}/empty.jpg"), b"")
    result = run_ingest(IngestConfig(input="s3://raw/synthetic", format="folder",
                                     output="s3://corpora/from-s3"))
    report = json.loads(storage.read_bytes(storage.resolve("s3://corpora/from-s3/_report.json")))
    assert result.rows == 96
    assert sorted((s["input"].rsplit("/", 1)[-1], s["reason"]) for s in report["skipped_inputs"]) == \
        [("broken.jpg", "not_an_image"), ("empty.jpg", "empty")]


def test_csv_rows_may_point_at_s3_objects(synthetic_folder, tmp_path):
    _upload(synthetic_folder, "s3://raw/csv-images")
    images = sorted((synthetic_folder / "images").glob("*/*.jpg"))[:4]
    lines = ["path,kingdom,phylum,class,order,family,genus,species,common_name"]
    lines += [f"s3://raw/csv-images/{p.relative_to(synthetic_folder)},Animalia,Chordata,Aves,"
              "Passeriformes,Corvidae,Pica,hudsonia,magpie" for p in images]
    lines.append("s3://raw/csv-images/images/missing.jpg,Animalia,,,,,Pica,hudsonia,")
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    result = run_ingest(IngestConfig(input=str(tmp_path / "index.csv"), format="csv",
                                     output="s3://corpora/from-csv"))
    assert result.rows == 4 and result.skipped_by_reason == {"unreadable": 1}


def test_webdataset_tars_in_s3_ingest(shared_data):
    root = storage.resolve("s3://raw/tol")
    storage.ensure_bucket(root)
    tar = shared_data / "tol-sample" / "shard-000002.tar"
    storage.write_bytes(root.join(tar.name), tar.read_bytes())
    result = run_ingest(IngestConfig(input="s3://raw/tol", format="webdataset",
                                     output="s3://corpora/tol"))
    assert result.rows == 100 and result.skipped == 0


def test_storage_errors_name_the_uri_never_the_secret():
    # moto accepts any key, so the failure here is a missing object read with explicit credentials.
    opts = storage.S3Options(access_key_id="other-id", secret_access_key="wrong-secret-value")
    with pytest.raises(storage.StorageError) as info:
        storage.read_bytes(storage.resolve("s3://corpora/synthetic/missing.json", opts))
    message = str(info.value)
    assert "s3://corpora/synthetic/missing.json" in message
    assert "wrong-secret-value" not in message and S3_SECRET not in message


def test_missing_corpus_in_s3_is_a_clear_error():
    with pytest.raises(shards.CorpusError, match="s3://corpora/nothing-here: no _manifest.json"):
        build_stream(StreamConfig(data="s3://corpora/nothing-here"))
