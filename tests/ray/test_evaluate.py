"""Evaluation on a local Ray: pipeline features equal a plain loop, folders are read in place with bad
images skipped, and the job writes results, report and map for two models side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.eval.embed import embed_dataset, embed_local
from linnaeus.eval.modelref import load_model

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def corpus(ingest_synthetic) -> Path:
    return ingest_synthetic(40)


def test_pipeline_features_equal_a_plain_single_process_loop(corpus):
    model = load_model("arch:linnaeus-tiny")[0]
    data = embed_dataset(str(corpus), "arch:linnaeus-tiny", model.visual.preprocess_cfg, batch_size=16)
    rows = [r for shard in sorted(corpus.glob("part-*.parquet")) for r in pq.read_table(shard).to_pylist()]
    expected = embed_local(rows, model)
    order = {r["image_id"]: i for i, r in enumerate(rows)}
    got = data.features[torch.tensor([i for i in range(len(data.image_ids))])]
    want = expected[torch.tensor([order[i] for i in data.image_ids])]
    assert len(data.image_ids) == len(rows) == 96 and not data.skipped
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_a_folder_dataset_is_read_in_place_and_a_corrupt_image_is_skipped_alone(synthetic_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(synthetic_folder, folder)
    victim = sorted((folder / "images").rglob("*.jpg"))[0]
    victim.write_bytes(b"\xff\xd8 not really a jpeg")
    preprocess = load_model("arch:linnaeus-tiny")[0].visual.preprocess_cfg
    data = embed_dataset(str(folder), "arch:linnaeus-tiny", preprocess)
    assert len(data.taxa) == 95 and len(data.skipped) == 1
    assert data.skipped[0]["reason"].startswith("not_an_image")  # the reason ingest and the service give
    # the features of the others still belong to their own images, with the skipped one in their batch
    expected = embed_local([{"image": (folder / "images" / i).read_bytes()} for i in data.image_ids],
                           load_model("arch:linnaeus-tiny")[0])
    assert torch.allclose(data.features, expected, atol=1e-5)


def test_evaluate_job_reports_two_models_side_by_side(corpus, tmp_path, load_job, capsys):
    torch.manual_seed(5)
    export_model(create_model("linnaeus-tiny"), "linnaeus-tiny", str(tmp_path / "other"))
    argv = ["--model", "arch:linnaeus-tiny", "--compare", str(tmp_path / "other"), "--data", str(corpus),
            "--output", str(tmp_path / "eval"), "--shots", "1,5", "--seeds", "3", "--rank", "species"]
    assert load_job("evaluate").main(argv) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["settings"]["shots"] == [1, 5] and len(results["models"]) == 2
    first = results["models"]["arch:linnaeus-tiny"]
    assert first["zeroshot"]["classes"] == 8 and 0 <= first["zeroshot"]["top1"] <= 1
    assert set(first["fewshot"]) == {"1-shot", "5-shot"} and len(first["fewshot"]["5-shot"]["per_seed"]) == 3
    assert first["hierarchy"]["kingdom"]["taxa"] >= 1 and "image_to_text_r1" in first["retrieval"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert f"| figure | arch:linnaeus-tiny | {tmp_path.name}/other |" in report and "5-shot species" in report
    assert (tmp_path / "eval" / "embedding_map.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "eval" / "embedding_map_compare.png").is_file()
    assert "zero-shot species top1" in capsys.readouterr().out


def test_two_text_types_of_one_model_are_reported_side_by_side(corpus, tmp_path, load_job):
    argv = ["--model", "arch:linnaeus-tiny", "--data", str(corpus), "--output", str(tmp_path / "eval"),
            "--tasks", "zeroshot", "--text-type", "scientific", "--compare-text-type", "common"]
    assert load_job("evaluate").main(argv) == 0
    models = json.loads((tmp_path / "eval" / "results.json").read_text())["models"]
    assert set(models) == {"arch:linnaeus-tiny [scientific]", "arch:linnaeus-tiny [common]"}
    assert models["arch:linnaeus-tiny [scientific]"]["zeroshot"]["classes"] == 8
    # every taxon of the synthetic corpus has a common name: none falls back to its taxonomic name
    assert models["arch:linnaeus-tiny [common]"]["zeroshot"]["names_fallen_back_to_taxonomic"] == 0
    assert "text type per column" in (tmp_path / "eval" / "report.md").read_text()


def test_texts_through_model_actors_equal_the_drivers_and_keep_their_order():
    from linnaeus.eval.texts import cluster_texts, local_texts

    names = [f"Corvus species {i}" for i in range(2500)]  # three actor batches, returned in any order
    model = load_model("arch:linnaeus-tiny")[0].eval()
    expected = local_texts(model, "linnaeus-tiny")(names)
    got = cluster_texts("arch:linnaeus-tiny", "linnaeus-tiny", actors=1, gpus_each=0)(names)
    assert torch.allclose(got, expected, atol=1e-5)
