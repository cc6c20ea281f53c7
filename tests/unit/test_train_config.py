"""Training recipes: the shipped ones validate, derived fields follow the model, bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from linnaeus.config import ConfigError, TrainConfig, load_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


@pytest.mark.parametrize("recipe", ["demo", "cub50", "bioclip-vitb16"])
def test_shipped_recipes_validate(recipe):
    cfg = load_yaml(TrainConfig, CONFIGS / f"{recipe}.yaml")
    assert cfg.data.model == cfg.model.arch


def test_bioclip_recipe_is_the_papers():
    cfg = load_yaml(TrainConfig, CONFIGS / "bioclip-vitb16.yaml")
    assert (cfg.model.arch, cfg.model.init) == ("ViT-B-16", "openai")
    assert cfg.global_batch == 32_768 and cfg.schedule.epochs == 100
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.weight_decay) == (1e-4, 1000, 0.2)
    assert len(cfg.data.text_types) == 5 and cfg.data.mixing.value == "per_image"


def test_stream_settings_follow_the_models_config():
    cfg = load_yaml(TrainConfig, CONFIGS / "demo.yaml")
    assert (cfg.data.model, cfg.data.image_size, cfg.data.context_length) == ("linnaeus-tiny", 64, 77)
    vit = load_yaml(TrainConfig, CONFIGS / "demo.yaml", ["model.arch=ViT-B-16"])
    assert (vit.data.model, vit.data.image_size) == ("ViT-B-16", 224)


def test_cut_text_is_on_where_the_model_allows_it_and_refused_where_it_would_change_features():
    cfg = load_yaml(TrainConfig, CONFIGS / "demo.yaml")
    assert cfg.data.cut_text and cfg.model.fused_attention
    assert not load_yaml(TrainConfig, CONFIGS / "demo.yaml", ["data.cut_text=false"]).data.cut_text
    assert not load_yaml(TrainConfig, CONFIGS / "demo.yaml", ["model.arch=EVA02-B-16"]).data.cut_text
    with pytest.raises(ConfigError, match="data.cut_text: .*EVA02-B-16 cannot take cut text: its text tower is"):
        load_yaml(TrainConfig, CONFIGS / "demo.yaml", ["model.arch=EVA02-B-16", "data.cut_text=true"])


@pytest.mark.parametrize("override, named", [
    ("optim.lrr=0.1", "optim.lrr"),
    ("schedule.batch_size=0", "schedule.batch_size"),
    ("optim.lr=-1", "optim.lr"),
    ("scaling.workers=two", "scaling.workers"),
    ("schedule.precision=fp8", "schedule.precision"),
    ("model.arch=ViT-Q-99", "model.arch"),
    ("data.image_size=128", "data.image_size=128 does not match model.arch"),
    ("faults={kill_at_step: 3, rank: 5}", "faults.rank=5 but there are 2 workers"),
])
def test_bad_values_fail_naming_the_field(override, named):
    with pytest.raises(ConfigError) as err:
        load_yaml(TrainConfig, CONFIGS / "demo.yaml", [override])
    assert named in str(err.value) and "demo.yaml" in str(err.value)
