"""Model factory, checkpoint initialisation and the open_clip-format export (tiny model, CPU)."""

from __future__ import annotations

import open_clip
import pytest
import torch

from linnaeus.clip.exports import CONFIG_NAME, WEIGHTS_NAME, export_model
from linnaeus.clip.models import ModelLoadError, create_model, register_configs


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("linnaeus-tiny").eval()


def _features(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def test_tiny_config_builds_a_clip_with_its_embedding_size(tiny):
    images, tokens = torch.randn(2, 3, 64, 64), open_clip.get_tokenizer("linnaeus-tiny")(["a", "b"])
    image_features, text_features = _features(tiny, images, tokens)
    assert image_features.shape == text_features.shape == (2, 64)


def test_export_loads_with_plain_open_clip_both_ways(tiny, tmp_path):
    export_model(tiny, "linnaeus-tiny", str(tmp_path / "export"))
    assert (tmp_path / "export" / CONFIG_NAME).is_file() and (tmp_path / "export" / WEIGHTS_NAME).is_file()
    images, tokens = torch.randn(2, 3, 64, 64), open_clip.get_tokenizer("linnaeus-tiny")(["x", "y"])
    expected = _features(tiny, images, tokens)
    register_configs()  # a user does this (or uses local-dir:) for a non-built-in architecture
    by_file, _, preprocess = open_clip.create_model_and_transforms(
        "linnaeus-tiny", pretrained=str(tmp_path / "export" / WEIGHTS_NAME))
    by_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'export'}")
    for loaded in (by_file.eval(), by_dir.eval()):
        for got, want in zip(_features(loaded, images, tokens), expected):
            assert torch.allclose(got, want, atol=1e-6)


def test_init_from_an_exported_checkpoint_restores_the_weights(tiny, tmp_path):
    export_model(tiny, "linnaeus-tiny", str(tmp_path / "m"))
    again = create_model("linnaeus-tiny", init=str(tmp_path / "m" / WEIGHTS_NAME))
    for (name, a), (_, b) in zip(tiny.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("init", ["openai", "hf-hub:imageomics/bioclip"])
def test_hub_weights_offline_fail_fast_with_a_clear_message(monkeypatch, init):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that cannot be reached, anywhere
    with pytest.raises(ModelLoadError, match=f"cannot fetch pretrained weights '{init}'.*"
                                             "127.0.0.1:9 is unreachable.*path or s3://"):
        create_model("ViT-B-16", init=init)


@pytest.mark.parametrize("arch, init, message", [
    ("ViT-Q-99", None, "unknown open_clip architecture 'ViT-Q-99'"),
    ("linnaeus-tiny", "/nowhere/weights.bin", "no such checkpoint file"),
])
def test_bad_architecture_or_checkpoint_is_named(arch, init, message):
    with pytest.raises(ModelLoadError, match=message):
        create_model(arch, init=init)


def test_a_checkpoint_of_another_architecture_is_refused(tiny, tmp_path):
    path = tmp_path / "wrong.bin"
    torch.save({"not_a_clip_weight": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match="not a checkpoint of linnaeus-tiny"):
        create_model("linnaeus-tiny", init=str(path))
