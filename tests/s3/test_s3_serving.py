"""Serving against object storage: a model, its label bank and bulk predictions all in s3:// (moto)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from linnaeus import storage
from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.serving.predictor import Predictor

pytestmark = pytest.mark.usefixtures("ray_s3")


def test_label_bank_and_bulk_predictions_live_next_to_an_s3_model(load_job, synthetic_folder, tmp_path):
    model = export_model(create_model("linnaeus-tiny", seed=4), "linnaeus-tiny", "s3://models/served").uri
    assert load_job("build_label_bank").main(["--model", model, "--taxa", str(synthetic_folder),
                                              "--templates", "single"]) == 0
    predictor = Predictor(model, device="cpu")  # finds s3://models/served/label_bank
    assert predictor.bank is not None and len(predictor.bank) == 8

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, src in enumerate(sorted((synthetic_folder / "images").rglob("*.jpg"))[:6]):
        shutil.copy(src, photos / f"{i}.jpg")
    (photos / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = "s3://predictions/run1"
    assert load_job("predict").main(["--model", model, "--input", str(photos), "--output", out, "--k", "2"]) == 0
    report = json.loads(storage.read_bytes(storage.resolve(out).join("_report.json")))
    assert (report["images"], report["predicted"], report["skipped"]) == (7, 6, 1)
    assert report["skipped_by_reason"] == {"not_an_image": 1}
    assert report["storage_retries"] == {"requests": 0, "by_operation": {}}  # a healthy store: none
    probabilities = [r["probability_1"] for r in _rows(out) if not r["error"]]
    assert len(probabilities) == 6 and all(0 < p <= 1 for p in probabilities)
    assert np.isfinite(probabilities).all()


def _rows(uri: str) -> list[dict]:
    import pyarrow.parquet as pq

    loc = storage.resolve(uri)
    files = [f.path for f in storage.list_files(loc) if f.path.endswith(".parquet")]
    return [row for f in files for row in pq.read_table(f, filesystem=loc.fs).to_pylist()]
