"""FP8 training (torchao): which layers are converted, that checkpoints keep their shape, and recipes
that cannot run FP8 failing at validation."""

from __future__ import annotations

import pytest
import torch

from linnaeus.clip import float8
from linnaeus.clip.models import create_model
from linnaeus.clip.towers import autocast
from linnaeus.config import ConfigError, TrainConfig, load_yaml

pytest.importorskip("torchao", reason="the fp8 extra (in dev) provides torchao")


def test_only_the_mlp_linears_of_both_towers_become_fp8_and_the_state_dict_is_unchanged():
    model = create_model("linnaeus-tiny")
    before = {k: v.shape for k, v in model.state_dict().items()}
    swapped = float8.convert(model, "fp8", torch.device("cpu"))
    converted = [n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"]
    assert swapped == len(converted) == 2 * (2 + 2)  # c_fc + c_proj in 2 vision + 2 text blocks
    assert all(".mlp." in f".{n}." for n in converted)
    assert all(type(b.attn.out_proj).__name__ != "Float8Linear" for b in model.visual.transformer.resblocks)
    assert {k: v.shape for k, v in model.state_dict().items()} == before


def test_an_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="not an FP8 recipe"):
        float8.convert(create_model("linnaeus-tiny"), "bf16", torch.device("cpu"))


def test_fp8_runs_under_bf16_autocast():
    assert isinstance(autocast(torch.device("cpu"), "fp8"), torch.autocast)


def test_fp8_without_gpus_fails_at_validation(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {data: /nowhere}\nmodel: {arch: linnaeus-tiny}\nschedule: {precision: fp8}\n")
    with pytest.raises(ConfigError, match="precision=fp8 needs GPUs"):
        load_yaml(TrainConfig, recipe)
    cfg = load_yaml(TrainConfig, recipe, ["scaling.use_gpu=true"])
    assert cfg.schedule.precision == "fp8"


def test_fp8_without_torchao_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(float8, "available", lambda: False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {data: /nowhere}\nmodel: {arch: linnaeus-tiny}\n"
                      "schedule: {precision: fp8-rowwise}\nscaling: {use_gpu: true}\n")
    with pytest.raises(ConfigError, match=r"needs torchao: pip install 'linnaeus\[fp8\]'"):
        load_yaml(TrainConfig, recipe)
