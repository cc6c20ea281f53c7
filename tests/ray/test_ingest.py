"""The ingest job end to end on a local Ray: every bad-input kind is reported, the rest ingested."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from linnaeus import storage
from linnaeus.config import IngestConfig
from linnaeus.data import shards
from linnaeus.data.ingest import run_ingest

pytestmark = pytest.mark.usefixtures("ray_local")


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _noise(mode="RGB", size=(48, 40)) -> Image.Image:
    arr = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.fixture(scope="module")
def planted(synthetic_folder, tmp_path_factory):
    """The synthetic folder corpus plus one file of every bad kind, and a malformed taxa row."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(synthetic_folder, root, dirs_exist_ok=True)
    folder = next(p for p in sorted((root / "images").iterdir()))
    good = (folder / "0000.jpg").read_bytes()
    bad = {
        "zero.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "notes.jpg": b"field notes, not a photo\n",
        "cmyk.jpg": _encode(_noise("CMYK"), "JPEG"),
        "cmyk2.jpg": _encode(_noise("CMYK", (30, 30)), "JPEG"),
        "deep.png": _encode(Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)), "PNG"),
        "alpha.png": _encode(_noise("RGBA"), "PNG"),
        "bomb.png": _encode(Image.new("L", (6000, 6000)), "PNG"),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (root / "images" / "Unlisted_folder").mkdir()
    (root / "images" / "Unlisted_folder" / "a.jpg").write_bytes(good)
    with open(root / "taxa.csv", "a") as fh:
        fh.write("Broken_row,Animalia,Chordata\n")
    (root / "images" / "Broken_row").mkdir()
    (root / "images" / "Broken_row" / "b.jpg").write_bytes(good)
    return root


def _ingest(tmp_path, src, fmt="folder", **kw):
    cfg = IngestConfig(input=str(src), format=fmt, output=str(tmp_path / "corpus"),
                       max_pixels=20_000_000, **kw)
    return run_ingest(cfg), json.loads((tmp_path / "corpus" / "_report.json").read_text())


def test_every_bad_input_is_reported_and_the_rest_ingested(planted, tmp_path):
    result, report = _ingest(tmp_path, planted, shard_rows=40)
    reasons = {item["input"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped_inputs"]}
    assert reasons == {"zero.jpg": "empty", "truncated.jpg": "undecodable", "notes.jpg": "not_an_image",
                       "bomb.png": "too_many_pixels", "a.jpg": "no_taxonomy", "b.jpg": "no_taxonomy",
                       "taxa.csv:10": "malformed_taxonomy"}
    assert result.rows == 8 * 12 + 4  # the synthetic images plus 2 cmyk, 16-bit and alpha, converted
    assert report["converted_by_kind"] == {"cmyk->rgb": 2, "png->jpeg,i;16->rgb": 1,
                                           "png->jpeg,rgba->rgb": 1}
    assert report["converted"] == result.converted == 4
    assert {e["conversion"] for e in report["converted_examples"]} == set(report["converted_by_kind"])
    assert result.skipped == len(report["skipped_inputs"]) == 7


def test_shards_hold_cleaned_rgb_jpegs_with_taxonomy(planted, tmp_path):
    result, _ = _ingest(tmp_path, planted, shard_rows=40)
    manifest = shards.read_manifest(storage.resolve(tmp_path / "corpus"))
    assert manifest.rows == result.rows == sum(e.rows for e in manifest.shards)
    assert len(manifest.shards) >= 3 and manifest.taxa == 8
    assert manifest.rank_completeness["species"] == manifest.rows
    assert manifest.text_types["taxonomic_common"] == manifest.rows
    table = pq.read_table(tmp_path / "corpus" / manifest.shards[0].path)
    assert table.schema.names == shards.SCHEMA.names
    image = Image.open(io.BytesIO(table.column("image")[0].as_py()))
    assert image.mode == "RGB" and image.format == "JPEG"
    assert table.column("genus")[0].as_py()[0].isupper() and table.column("source")[0].as_py()


def test_rerun_to_the_same_output_does_not_duplicate_rows(synthetic_folder, tmp_path):
    first, _ = _ingest(tmp_path, synthetic_folder, shard_rows=50)
    second, report = _ingest(tmp_path, synthetic_folder, shard_rows=50)
    files = sorted(p.name for p in (tmp_path / "corpus").glob("part-*.parquet"))
    manifest = shards.read_manifest(storage.resolve(tmp_path / "corpus"))
    assert first.rows == second.rows == manifest.rows == 96
    assert files == sorted(e.path for e in manifest.shards)  # only the new run's shards remain
    assert len(report["stale_shards_deleted"]) == first.shards
    total = sum(pq.ParquetFile(tmp_path / "corpus" / f).metadata.num_rows for f in files)
    assert total == 96


def test_resize_shrinks_the_shorter_side(synthetic_folder, tmp_path):
    _ingest(tmp_path, synthetic_folder, resize=32)
    manifest = shards.read_manifest(storage.resolve(tmp_path / "corpus"))
    table = pq.read_table(tmp_path / "corpus" / manifest.shards[0].path, columns=["image"])
    assert Image.open(io.BytesIO(table.column("image")[0].as_py())).size == (32, 32)


def test_csv_format_reports_unreadable_paths(synthetic_folder, tmp_path):
    images = sorted((synthetic_folder / "images").glob("*/*.jpg"))[:5]
    lines = ["path,kingdom,phylum,class,order,family,genus,species,common_name,caption"]
    lines += [f"{p},Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,magpie,seen {i}"
              for i, p in enumerate(images)]
    lines.append("missing/nowhere.jpg,Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,,")
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    result, report = _ingest(tmp_path, tmp_path / "index.csv", fmt="csv")
    assert result.rows == 5 and result.taxa == 1
    assert [(s["input"].endswith("missing/nowhere.jpg"), s["reason"])
            for s in report["skipped_inputs"]] == [(True, "unreadable")]
    table = pq.read_table(tmp_path / "corpus" / shards.read_manifest(
        storage.resolve(tmp_path / "corpus")).shards[0].path, columns=["caption"])
    assert sorted(table.column("caption").to_pylist())[0] == "seen 0"


def test_webdataset_tol_sample_ingests_all_300_samples(shared_data, tmp_path):
    result, report = _ingest(tmp_path, shared_data / "tol-sample", fmt="webdataset", resize=224)
    manifest = shards.read_manifest(storage.resolve(tmp_path / "corpus"))
    assert result.rows == manifest.rows == 300 and report["skipped"] == 0
    assert manifest.taxa == 50 and manifest.rank_completeness["species"] < 300  # genus-only taxa
    assert manifest.text_types["common"] == manifest.rank_completeness["common_name"]


def test_webdataset_with_a_corrupt_tar_reports_it_and_keeps_the_others(shared_data, tmp_path):
    src = tmp_path / "wds"
    src.mkdir()
    shutil.copy(shared_data / "tol-sample" / "shard-000001.tar", src / "good.tar")
    (src / "bad.tar").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "zeros.tar").write_bytes(b"\x00" * 10240)  # reads as an empty archive
    result, report = _ingest(tmp_path, src, fmt="webdataset")
    assert result.rows == 100
    assert [(s["input"].rsplit("/", 1)[-1], s["reason"]) for s in report["skipped_inputs"]] == \
        [("bad.tar", "unreadable"), ("zeros.tar", "empty")]


def test_cub50_gives_50_taxa_and_2964_rows(shared_data, tmp_path):
    result, report = _ingest(tmp_path, shared_data / "cub50", shard_rows=1000)
    manifest = shards.read_manifest(storage.resolve(tmp_path / "corpus"))
    assert (manifest.rows, manifest.taxa, report["skipped"]) == (2964, 50, 0)
    assert manifest.rank_completeness["genus"] == 2964 > manifest.rank_completeness["species"]
