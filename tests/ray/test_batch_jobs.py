"""Label banks and bulk prediction as Ray Data jobs, through their entrypoints, on a local Ray."""

from __future__ import annotations

import json
import shutil

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.images import decode_image
from linnaeus.serving.bank import LabelBank, taxa_embeddings
from linnaeus.serving.predictor import Predictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bank-model") / "model")
    export_model(create_model("linnaeus-tiny", seed=2), "linnaeus-tiny", out)
    return out


@pytest.fixture(scope="module")
def bank(ray_local, load_job, model_dir, synthetic_folder, tmp_path_factory):
    extra = tmp_path_factory.mktemp("taxa") / "extra.csv"
    extra.write_text("kingdom,phylum,class,order,family,genus,species,common_name\n"
                     "Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,black-billed magpie\n")
    argv = ["--model", model_dir, "--taxa", str(synthetic_folder), "--taxa", str(extra), "--templates", "single"]
    assert load_job("build_label_bank").main(argv) == 0
    assert load_job("build_label_bank").main(argv) == 0  # a rebuild replaces, never appends
    return LabelBank.load(f"{model_dir}/label_bank")


def test_label_bank_holds_every_taxon_once_with_its_text_embedding(bank, model_dir):
    assert len(bank) == 9 and len({t.key for t in bank.taxa}) == 9  # 8 synthetic + the magpie
    assert bank.meta["templates"] == "single" and bank.meta["text_types"] == ["taxonomic_common"]
    p = Predictor(model_dir, device="cpu")
    assert bank.meta["model_digest"] == p.model_id and len(p.bank) == 9
    expected = taxa_embeddings(p.model, p.tokenizer, bank.taxa, ["taxonomic_common"], "single")
    torch.testing.assert_close(bank.embeddings, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def photo_dir(synthetic_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bucket")
    sources = sorted((synthetic_folder / "images").rglob("*.jpg"))[:10]
    for i, src in enumerate(sources):
        (out / ("nested" if i % 2 else "")).mkdir(exist_ok=True)
        shutil.copy(src, out / ("nested" if i % 2 else "") / f"img{i}.jpg")
    (out / "broken.jpg").write_bytes(sources[0].read_bytes()[:200])
    (out / "notes.txt").write_text("not an image")
    return out


def test_predict_writes_top_k_taxa_per_image_and_reports_what_it_skipped(
        bank, ray_local, load_job, model_dir, photo_dir, tmp_path):
    out = tmp_path / "pred"
    argv = ["--model", model_dir, "--input", str(photo_dir), "--output", str(out), "--rank", "genus", "--k", "3"]
    assert load_job("predict").main(argv) == 0
    table = pq.read_table(out).to_pylist()
    assert len(table) == 11
    report = json.loads((out / "_report.json").read_text())
    assert (report["images"], report["predicted"], report["skipped"], report["not_image_files"]) == (11, 10, 1, 1)
    assert report["skipped_files"][0]["path"].endswith("broken.jpg")
    broken = [r for r in table if r["path"].endswith("broken.jpg")][0]
    assert broken["error"] and broken["name_1"] is None
    p = Predictor(model_dir, device="cpu")
    for row in (r for r in table if not r["error"]):
        expected = p.predict([decode_image(open(row["path"], "rb").read())], rank="genus", k=3)[0]
        assert [row[f"name_{i}"] for i in (1, 2, 3)] == [a["name"] for a in expected]
        assert row["probability_1"] == pytest.approx(expected[0]["probability"], rel=1e-4)


def test_predict_against_free_text_labels_writes_csv(bank, ray_local, load_job, model_dir, photo_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a red animal\na blue animal\n\na striped animal\n")
    out = tmp_path / "pred-csv"
    argv = ["--model", model_dir, "--input", str(photo_dir), "--output", str(out), "--labels", str(labels),
            "--k", "2", "--format", "csv"]
    assert load_job("predict").main(argv) == 0
    rows = [r for f in sorted(out.glob("*.csv")) for r in pacsv.read_csv(f).to_pylist()]
    assert len(rows) == 11
    assert {r["name_1"] for r in rows if r["name_1"]} <= {"a red animal", "a blue animal", "a striped animal"}


def test_predict_refuses_unknown_subset_names_and_missing_banks_before_ray_work(
        bank, load_job, model_dir, photo_dir, tmp_path, capsys):
    argv = ["--model", model_dir, "--input", str(photo_dir), "--output", str(tmp_path / "x")]
    assert load_job("predict").main([*argv, "--subset", "Pica,Nonexistus"]) == 2
    assert "Nonexistus" in capsys.readouterr().err
    assert load_job("predict").main([*argv, "--bank", str(tmp_path / "nobank")]) == 2
    assert "not a label bank" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
