"""Hostile images (tests/hostile.py: truncated, zero-byte, text as PNG, CMYK, 16-bit, alpha, palette,
EXIF-rotated, a 100-megapixel bomb, a huge ICC profile) through ingest, the training stream, evaluation
and bulk prediction on a local Ray: each is kept, converted or skipped and reported by name as
docs/reliability.md's table says, and the run goes on (the HTTP column is in tests/ray/test_serve.py)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.config import IngestConfig, StreamConfig
from linnaeus.data.ingest import run_ingest
from linnaeus.data.stream import build_stream
from linnaeus.eval.embed import embed_dataset
from linnaeus.eval.modelref import load_model
from tests.hostile import EXPECTED, hostile_images

pytestmark = pytest.mark.usefixtures("ray_local")
ROOT = Path(__file__).resolve().parents[2]
FILES = {name: file for name, (file, _) in hostile_images().items()}


def _by_file(column: int) -> dict[str, str]:
    return {FILES[name]: outcomes[column] for name, outcomes in EXPECTED.items()}


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> Path:
    """A folder dataset: every hostile image in one species folder, with its taxonomy."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "images" / "Ardea_alba"
    folder.mkdir(parents=True)
    for file, data in hostile_images().values():
        (folder / file).write_bytes(data)
    with open(root / "taxa.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["folder", "kingdom", "phylum", "class", "order", "family", "genus", "species",
                                   "common_name"],
                                  ["Ardea_alba", "Animalia", "Chordata", "Aves", "Pelecaniformes", "Ardeidae",
                                   "Ardea", "alba", "great egret"]])
    return root


@pytest.fixture(scope="module")
def ingested(hostile_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-corpus")
    result = run_ingest(IngestConfig(input=str(hostile_folder), format="folder", output=str(out)))
    return result, json.loads((out / "_report.json").read_text()), out


def test_ingest_keeps_converts_or_skips_each_hostile_image_as_the_table_says(ingested):
    result, report, out = ingested
    expected = _by_file(0)
    skipped = {Path(s["input"]).name: f"skipped:{s['reason']}" for s in report["skipped_inputs"]}
    assert skipped == {f: o for f, o in expected.items() if o.startswith("skipped")}
    rows = [r for shard in sorted(out.glob("part-*.parquet"))
            for r in pq.read_table(shard, columns=["image_id"]).to_pylist()]
    kept = {f for f, o in expected.items() if o in ("kept", "converted")}
    assert {Path(r["image_id"]).name for r in rows} == kept and result.rows == len(kept)
    assert result.converted == sum(o == "converted" for o in expected.values())
    assert result.skipped == len(skipped)


def test_the_stream_decodes_every_row_ingest_kept(ingested):
    result, _, out = ingested
    stream = build_stream(StreamConfig(data=str(out), image_size=32, preprocess_batch=4))
    seen = sum(len(b["sample_key"]) for b in stream.dataset.iter_batches(batch_size=4, batch_format="numpy"))
    assert seen == result.rows and stream.skipped()["skipped"] == 0


def test_evaluation_answers_or_skips_each_hostile_image_by_name(hostile_folder):
    preprocess = load_model("arch:linnaeus-tiny")[0].visual.preprocess_cfg
    data = embed_dataset(str(hostile_folder), "arch:linnaeus-tiny", preprocess, batch_size=4)
    expected = _by_file(1)
    got = {Path(s["image_id"]).name: "skipped:" + s["reason"].split(":")[0] for s in data.skipped}
    got |= {Path(i).name: "answered" for i in data.image_ids}
    assert got == expected


def test_bulk_prediction_answers_or_skips_each_hostile_image_by_name(hostile_folder, load_job, tmp_path):
    model = str(tmp_path / "model")
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", model)
    labels = tmp_path / "labels.txt"
    labels.write_text("a heron\na gull\n")
    out = tmp_path / "pred"
    argv = ["--model", model, "--input", str(hostile_folder / "images"), "--output", str(out),
            "--labels", str(labels), "--k", "1"]
    assert load_job("predict").main(argv) == 0
    rows = pq.read_table(out).to_pylist()
    got = {Path(r["path"]).name: ("skipped:" + r["error"].split(":")[0]) if r["error"] else "answered" for r in rows}
    assert got == _by_file(1)
    report = json.loads((out / "_report.json").read_text())
    assert report["skipped"] == sum(o.startswith("skipped") for o in _by_file(1).values())


def test_the_table_in_docs_reliability_is_the_one_the_tests_hold():
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Hostile images", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("| image")]
    table = {r[0]: tuple(r[1:4]) for r in rows if not re.fullmatch(r"-+", r[0])}
    assert table == EXPECTED
