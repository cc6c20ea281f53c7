from __future__ import annotations

import pytest

from linnaeus.config import ConfigError, IngestConfig, StreamConfig, apply_overrides, load_yaml, validate
from linnaeus.taxonomy import TextType
from linnaeus.text import Mixing


def test_recipe_loads_with_dotted_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: s3://b/c\nimage_size: 96\ns3:\n  region: eu-west-1\n")
    cfg = load_yaml(StreamConfig, path, ["mixing=per_batch", "s3.endpoint_url=http://127.0.0.1:9",
                                         "text_types=[scientific, common]"])
    assert cfg.image_size == 96 and cfg.mixing is Mixing.PER_BATCH
    assert cfg.s3.endpoint_url == "http://127.0.0.1:9" and cfg.s3.region == "eu-west-1"
    assert cfg.text_types == [TextType.SCIENTIFIC, TextType.COMMON]


def test_unknown_key_fails_naming_the_field_and_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: x\nshufle_buffer: 10\n")
    with pytest.raises(ConfigError, match=r"r.yaml.*\n.*shufle_buffer: Extra inputs"):
        load_yaml(StreamConfig, path)


@pytest.mark.parametrize("override, field", [
    ("image_size=-3", "image_size"), ("text_types=[latin]", "text_types"),
    ("crop_scale=[0.9, 0.5]", "crop_scale"), ("decode=tpu", "decode"),
])
def test_bad_values_fail_naming_the_field_and_value(override, field):
    with pytest.raises(ConfigError) as info:
        validate(StreamConfig, apply_overrides({"data": "x"}, [override]))
    assert f"  {field}:" in str(info.value)


def test_malformed_override_and_missing_recipe_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["image_size"])
    with pytest.raises(ConfigError, match="recipe not found"):
        load_yaml(StreamConfig, tmp_path / "nope.yaml")


def test_ingest_config_rejects_unknown_format():
    with pytest.raises(ConfigError, match="format"):
        validate(IngestConfig, {"input": "a", "format": "zip", "output": "b"})
