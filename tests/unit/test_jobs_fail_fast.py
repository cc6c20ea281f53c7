"""Entrypoints refuse bad arguments and bad inputs before any cluster work (Ray never starts)."""

from __future__ import annotations

import pytest
import ray


@pytest.mark.parametrize("argv, message", [
    (["--format", "folder", "--output", "o", "--input", "i", "--resize", "4"], "resize"),
    (["--format", "folder", "--output", "o", "--input", "i", "--shard-rows", "0"], "shard_rows"),
])
def test_ingest_rejects_bad_values_naming_the_field(load_job, argv, message, capsys):
    assert load_job("ingest").main(argv) == 2
    assert message in capsys.readouterr().err and not ray.is_initialized()


def test_ingest_rejects_an_unknown_format(load_job):
    with pytest.raises(SystemExit):
        load_job("ingest").main(["--input", "i", "--format", "zip", "--output", "o"])


def test_ingest_of_a_missing_folder_fails_naming_it(load_job, tmp_path, capsys):
    code = load_job("ingest").main(["--input", str(tmp_path / "nowhere"), "--format", "folder",
                                    "--output", str(tmp_path / "out")])
    assert code == 2 and "nowhere/taxa.csv: not found" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_preview_rejects_bad_overrides_before_ray(load_job, capsys):
    assert load_job("preview_stream").main(["--data", "x", "--set", "mixing=sometimes"]) == 2
    assert "mixing" in capsys.readouterr().err and not ray.is_initialized()


def test_train_rejects_a_bad_recipe_value_naming_the_field(load_job, capsys):
    argv = ["--config", "jobs/configs/demo.yaml", "--set", "schedule.accumulation=0"]
    assert load_job("train").main(argv) == 2
    err = capsys.readouterr().err
    assert "schedule.accumulation" in err and "demo.yaml" in err and not ray.is_initialized()


def test_train_on_an_unreadable_corpus_fails_naming_its_uri(load_job, tmp_path, capsys):
    argv = ["--config", "jobs/configs/demo.yaml", "--set", f"data.data={tmp_path / 'no-corpus'}"]
    assert load_job("train").main(argv) == 2
    assert f"{tmp_path / 'no-corpus'}" in capsys.readouterr().err and not ray.is_initialized()


def test_train_resume_of_a_folder_that_is_not_a_run_fails_naming_it(load_job, tmp_path, capsys):
    assert load_job("train").main(["--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: not a Linnaeus run folder" in capsys.readouterr().err



@pytest.mark.parametrize("change, message", [
    ({"--tasks": "zeroshot,astrology"}, "tasks"),
    ({"--rank": "tribe"}, "rank"),
    ({"--model": "arch:ViT-Q-99"}, "unknown open_clip architecture 'ViT-Q-99'"),
    ({"--model": "/nowhere/export"}, "/nowhere/export: not an exported model"),
    ({"--data": "/nowhere/photos"}, "/nowhere/photos: neither a corpus"),
])
def test_evaluate_rejects_bad_arguments_data_and_models_before_ray(load_job, synthetic_folder, tmp_path, capsys,
                                                                    change, message):
    args = {"--model": "arch:linnaeus-tiny", "--data": str(synthetic_folder), "--output": str(tmp_path), **change}
    assert load_job("evaluate").main([a for pair in args.items() for a in pair]) == 2
    assert message in capsys.readouterr().err and not ray.is_initialized()


def test_label_bank_job_rejects_bad_models_and_taxa_before_ray(load_job, tmp_path, capsys):
    from linnaeus.clip.exports import export_model
    from linnaeus.clip.models import create_model

    assert load_job("build_label_bank").main(["--model", str(tmp_path / "none"), "--taxa", "x.csv"]) == 2
    assert "not an exported model" in capsys.readouterr().err
    model = tmp_path / "model"
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", str(model))
    bad = tmp_path / "taxa.csv"
    bad.write_text("kingdom,phylum,class,order,family,genus,common_name\nAnimalia,,,,,,x\n")
    assert load_job("build_label_bank").main(["--model", str(model), "--taxa", str(bad)]) == 2
    assert "taxa.csv: missing column(s) ['species']" in capsys.readouterr().err
    bad.write_text("kingdom,phylum,class,order,family,genus,species\n,,,,,,hudsonia\n")
    assert load_job("build_label_bank").main(["--model", str(model), "--taxa", str(bad)]) == 2
    assert "taxa.csv:2" in capsys.readouterr().err
    assert load_job("build_label_bank").main(["--model", str(model), "--taxa", str(bad),
                                              "--text-types", "latin"]) == 2
    assert "text_types" in capsys.readouterr().err and not ray.is_initialized()


def test_predict_job_rejects_bad_arguments_before_ray(load_job, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    base = ["--model", str(tmp_path), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    assert load_job("predict").main([*base, "--k", "0"]) == 2
    assert "k" in capsys.readouterr().err
    assert load_job("predict").main([*base, "--rank", "tribe"]) == 2
    assert "rank" in capsys.readouterr().err
    assert load_job("predict").main([*base, "--labels", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert load_job("predict").main(base) == 2
    assert "not an exported model" in capsys.readouterr().err and not ray.is_initialized()


def test_predict_job_never_empties_its_input_or_an_unrelated_folder(load_job, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"keep me")
    for output in (photos, photos / "preds", tmp_path):
        assert load_job("predict").main(["--model", "m", "--input", str(photos), "--output", str(output)]) == 2
        assert "overlaps --input" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me too")
    assert load_job("predict").main(["--model", "m", "--input", str(photos), "--output", str(other)]) == 2
    assert "is not an earlier predictions output" in capsys.readouterr().err
    assert (photos / "a.jpg").exists() and (other / "notes.txt").exists() and not ray.is_initialized()


@pytest.mark.parametrize("sets, message", [
    (["schedule.precision=fp8"], "needs GPUs"),
    (["schedule.batch_size=0"], "schedule.batch_size"),
])
def test_benchmark_train_rejects_recipes_that_cannot_run_before_ray(load_job, tmp_path, capsys, sets, message):
    argv = ["--config", "jobs/configs/demo.yaml", "--output", str(tmp_path), "--modes", "ceiling,e2e",
            *[a for s in sets for a in ("--set", s)]]
    assert load_job("benchmark_train").main(argv) == 2
    assert message in capsys.readouterr().err and not ray.is_initialized()


@pytest.mark.parametrize("argv", [["--modes", "ceiling,warp"], ["--steps", "10", "--warmup-steps", "10"]])
def test_benchmark_train_rejects_bad_arguments(load_job, tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        load_job("benchmark_train").main(["--config", "jobs/configs/demo.yaml", "--output", str(tmp_path), *argv])
    assert exc.value.code == 2 and not ray.is_initialized()
