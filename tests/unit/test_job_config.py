"""One way to configure every job: --config FILE, then the job's flags, then --set key=value (later wins),
with one error format; the service's args take a file and overrides the same way."""

from __future__ import annotations

import argparse

import pytest

from linnaeus.config import ConfigError, EvalConfig, IngestConfig, PredictConfig, load_serve_args
from linnaeus.config.cli import Flag, add_config_arguments, comma_list, config_from_args

FLAGS = (Flag("--model", "model"), Flag("--data", "data"), Flag("--output", "output"),
         Flag("--tasks", "tasks", type=comma_list))


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, FLAGS)
    return parser.parse_args(argv)


def test_the_file_then_the_flags_then_set_each_override_the_one_before(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("model: from-file\ndata: d\noutput: o\nseeds: 3\ntasks: [zeroshot]\n")
    cfg = config_from_args(EvalConfig, _args(["--config", str(path), "--model", "from-flag", "--tasks",
                                              "fewshot,retrieval", "--set", "seeds=7", "--set", "shots=[2]"]),
                           FLAGS, "jobs/evaluate.py")
    assert (cfg.model, cfg.data, cfg.seeds, cfg.shots) == ("from-flag", "d", 7, [2])
    assert cfg.tasks == ["fewshot", "retrieval"]
    cfg = config_from_args(EvalConfig, _args(["--config", str(path), "--set", "model=from-set"]), FLAGS, "x")
    assert cfg.model == "from-set"


def test_every_job_fails_the_same_way_naming_the_file_and_field(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("model: m\ndata: d\noutput: o\nseedz: 3\n")
    with pytest.raises(ConfigError) as err:
        config_from_args(EvalConfig, _args(["--config", str(path)]), FLAGS, "jobs/evaluate.py")
    assert str(err.value).splitlines() == [f"jobs/evaluate.py ({path}): invalid configuration",
                                           "  seedz: Extra inputs are not permitted (got 3)"]
    with pytest.raises(ConfigError, match=r"jobs/predict.py: invalid configuration\n  input: Field required"):
        config_from_args(PredictConfig, _args(["--model", "m", "--output", "o"]), FLAGS, "jobs/predict.py")


def test_ingest_takes_its_settings_from_a_file(load_job, tmp_path, capsys):
    path = tmp_path / "ingest.yaml"
    path.write_text(f"input: {tmp_path / 'nowhere'}\nformat: folder\noutput: {tmp_path / 'out'}\nresize: 4\n")
    assert load_job("ingest").main(["--config", str(path)]) == 2
    assert "resize: Input should be greater than or equal to 16" in capsys.readouterr().err
    assert load_job("ingest").main(["--config", str(path), "--set", "resize=256"]) == 2
    assert "nowhere/taxa.csv: not found" in capsys.readouterr().err  # valid now: fails on the input itself
    assert IngestConfig.model_validate({"input": "i", "format": "folder", "output": "o"}).resize is None


def test_serve_args_come_from_a_file_with_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("model: out/model\nbatching: {max_batch_size: 64}\nlimits: {max_images: 8}\n")
    cfg = load_serve_args({"config": str(path), "cache_size": 10, "set": ["batching.max_batch_size=32"]})
    assert (cfg.model, cfg.cache_size, cfg.batching.max_batch_size, cfg.limits.max_images) == (
        "out/model", 10, 32, 8)
    with pytest.raises(ConfigError, match=rf"serve args \({path}\): invalid configuration\n  limits.max_images"):
        load_serve_args({"config": str(path), "set": ["limits.max_images=0"]})
    with pytest.raises(ConfigError, match=r"serve args: invalid configuration\n  model: Field required"):
        load_serve_args({})


def test_serve_args_override_a_files_section_field_by_field(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("model: m\nlimits: {max_images: 8, max_labels: 20}\n")
    cfg = load_serve_args({"config": str(path), "limits": {"max_images": 4}})
    assert (cfg.limits.max_images, cfg.limits.max_labels) == (4, 20)


def test_plugins_given_as_one_string_are_refused_naming_the_fix(tmp_path):
    from linnaeus.config import StreamConfig

    with pytest.raises(ValueError, match=r"plugins: a list of module names, got the string 'mylab.parts'"):
        StreamConfig.model_validate({"data": "x", "plugins": "mylab.parts"})
