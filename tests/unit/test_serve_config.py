"""serve/config.yaml stays deployable: Ray Serve's own schema accepts it, its args validate as
ServeArgs, and its deployment entries name deployments the code defines with settings they accept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from linnaeus.config import BatchingConfig, ConfigError, ServeArgs, validate

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_config_passes_ray_serves_own_schema(config):
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(config)
    assert [app.import_path for app in schema.applications] == ["serve.app:build_app"]


def test_config_args_and_deployments_match_the_code(config):
    from serve.ingress import Ingress
    from serve.model import ModelServer

    app = config["applications"][0]
    args = validate(ServeArgs, app["args"], "serve/config.yaml")
    assert args.model == "out/demo/model"  # what `make demo` publishes
    entries = {d["name"]: d for d in app["deployments"]}
    assert set(entries) == {ModelServer.name, Ingress.name}
    BatchingConfig.model_validate(entries["ModelServer"]["user_config"])


def test_bad_serve_args_fail_naming_the_field():
    with pytest.raises(ConfigError, match="limits.max_images"):
        validate(ServeArgs, {"model": "m", "limits": {"max_images": 0}}, "serve args")
    with pytest.raises(ConfigError, match="model_autoscaling"):
        validate(ServeArgs, {"model": "m", "model_autoscaling": {"min_replicas": 3, "max_replicas": 2}},
                 "serve args")
