"""Deployment files cannot run here (no Docker, no Kubernetes), so they are checked against the code:
they parse, the RayService serves exactly serve/config.yaml, entrypoints and recipes exist and
validate, secrets are the ones pods name, and the image installs pyproject's dependencies."""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IMAGE_ROOT = "/home/ray/linnaeus"  # where the Dockerfile puts the repository
RETRY_ON = "conn-failure empty-response"  # HAProxy replays a request whose ingress replica died (reliability.md)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in _docs(p)}


def test_every_infra_yaml_parses_and_k8s_manifests_have_kind_and_name():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert files
    for path in files:
        for doc in _docs(path):
            assert isinstance(doc, dict), path
    assert {"RayCluster/linnaeus", "RayJob/linnaeus-train", "RayService/linnaeus-serve", "Secret/linnaeus-s3",
            "Secret/linnaeus-api-key", "PodMonitor/linnaeus-ray"} <= set(_manifests())


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_rayservice", INFRA / "k8s" / "render_rayservice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rayservice_and_compose_serve_config_are_rendered_from_serve_config_yaml(render):
    assert render.main(["--check"]) == 0, "run: python infra/k8s/render_rayservice.py"


def test_rayservice_serves_on_the_cluster():
    served = yaml.safe_load(_manifests()["RayService/linnaeus-serve"]["spec"]["serveConfigV2"])
    assert served["http_options"]["host"] == "0.0.0.0"
    assert served["applications"][0]["args"]["model_gpus"] == 1  # built before GPU workers join: never guess
    model = next(d for d in served["applications"][0]["deployments"] if d["name"] == "ModelServer")
    assert model["autoscaling_config"]["min_replicas"] >= 2  # a rolling update always leaves one answering
    ingress = next(d for d in served["applications"][0]["deployments"] if d["name"] == "Ingress")
    assert ingress["autoscaling_config"]["min_replicas"] >= 2  # losing one is replayed on the other
    # its own name: KubeRay's <name>-head-svc must not collide with the training RayCluster's
    assert not set(_manifests()) & {"RayService/linnaeus"}


def test_compose_serve_config_serves_the_stacks_model_on_its_published_port():
    from linnaeus.config import ServeArgs

    served = yaml.safe_load((INFRA / "compose-serve.yaml").read_text())
    args = ServeArgs.model_validate(served["applications"][0]["args"])
    env = dict(line.split("#")[0].strip().split("=", 1) for line in (INFRA / "env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert args.model.startswith(f"s3://{env['LINNAEUS_BUCKET']}/")
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert f"127.0.0.1:{served['http_options']['port']}:{served['http_options']['port']}" in \
        compose["services"]["ray-head"]["ports"] and served["http_options"]["host"] == "0.0.0.0"
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert args.model in operations and "serve deploy infra/compose-serve.yaml" in operations


def test_every_serving_ray_node_runs_the_haproxy_ingress():
    # The flag is read where Serve starts HAProxy (the controller, on the head) and where ingress replicas
    # open their own HTTP servers (any node): every node of a serving cluster must carry it.
    cluster = _manifests()["RayService/linnaeus-serve"]["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        # an ingress replica drains >= 30 s behind HAProxy, and Serve lets it take 35
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] > 35
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", container["name"]
            assert env.get("RAY_SERVE_HAPROXY_RETRY_ON") == RETRY_ON, container["name"]
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    for name in ("ray-head", "ray-worker"):
        assert compose["services"][name]["environment"]["RAY_SERVE_ENABLE_HA_PROXY"] == "1", name
        assert compose["services"][name]["environment"]["RAY_SERVE_HAPROXY_RETRY_ON"] == RETRY_ON, name
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"RAY_SERVE_ENABLE_HA_PROXY=\$\(SERVE_HAPROXY\) [^\n]*\\\n\s*"
                     r"RAY_SERVE_HAPROXY_RETRY_ON=\"conn-failure empty-response\" \\\n"
                     r"\s*\S*serve run serve/config.yaml",
                     makefile)
    assert "SERVE_HAPROXY ?= $(if $(filter Linux,$(shell uname -s)),1,0)" in makefile  # on by default on Linux


def test_rayjob_entrypoint_names_files_in_the_image_and_a_recipe_that_validates():
    from linnaeus.config import TrainConfig, load_yaml

    argv = shlex.split(_manifests()["RayJob/linnaeus-train"]["spec"]["entrypoint"])
    assert argv[0] == "python"
    paths = [a for a in argv if a.startswith(IMAGE_ROOT)]
    for path in paths:
        assert (ROOT / path[len(IMAGE_ROOT) + 1:]).is_file(), path
    recipe = ROOT / argv[argv.index("--config") + 1][len(IMAGE_ROOT) + 1:]
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_yaml(TrainConfig, recipe, overrides)
    assert cfg.data.data.startswith("s3://") and cfg.checkpoint.storage_path.startswith("s3://")
    assert _manifests()["RayJob/linnaeus-train"]["spec"]["clusterSelector"]["ray.io/cluster"] == "linnaeus"


def _containers(manifest: dict) -> list[tuple[str, dict]]:
    spec = manifest["spec"].get("rayClusterConfig", manifest["spec"])
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", ["RayCluster/linnaeus", "RayService/linnaeus-serve"])
def test_clusters_run_the_project_image_with_gpu_requests_equal_to_limits_and_known_secrets(name):
    manifests = _manifests()
    secrets = {key.split("/")[1] for key in manifests if key.startswith("Secret/")}
    groups = _containers(manifests[name])
    for group, container in groups:
        assert container["image"].rsplit("/", 1)[-1] == f"linnaeus:{_version()}", (group, container["image"])
        for ref in container.get("envFrom", []):
            assert ref["secretRef"]["name"] in secrets, (group, ref)
        resources = container["resources"]
        assert resources["requests"].get("nvidia.com/gpu") == resources["limits"].get("nvidia.com/gpu")
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for g, c in groups if g == "gpu")
    assert manifests[name]["spec"].get("rayClusterConfig", manifests[name]["spec"])["rayVersion"] == _ray_pin()


def test_api_key_secret_fills_the_variable_the_service_reads():
    from linnaeus.config import ServeArgs

    served = yaml.safe_load(_manifests()["RayService/linnaeus-serve"]["spec"]["serveConfigV2"])
    variable = served["applications"][0]["args"].get("api_key_env", ServeArgs.model_fields["api_key_env"].default)
    assert variable in _manifests()["Secret/linnaeus-api-key"]["stringData"]


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.search(r"==([\d.]+)", d).group(1) for d in deps if d.startswith("ray["))


def test_dockerfile_installs_the_project_on_the_pinned_ray_and_names_no_package_of_its_own():
    text = (INFRA / "docker" / "Dockerfile").read_text()
    base = re.search(r"ARG RAY_IMAGE=rayproject/ray:([\d.]+)-py(\d)(\d+)-gpu", text)
    assert base and base.group(1) == _ray_pin()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert int(base.group(3)) >= int(requires.split(".")[1])
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all(re.search(r"pip install --no-cache-dir \.( |$)", line) for line in installs), installs
    assert "USER 1000" in text  # the base image's `ray`
    for copied in re.findall(r"COPY \S+ (\S+)/ ", text):
        assert (ROOT / copied).is_dir(), copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"out", ".venv", ".git"} <= set(ignored) and "platform" not in ignored


def _series(expr: str) -> set[str]:
    return set(re.findall(r"\b(ray_[a-z0-9_]+)", expr))


def dashboard_and_rule_series() -> set[str]:
    import json

    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "linnaeus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = _docs(INFRA / "prometheus" / "rules.yml")[0]
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {name for e in exprs for name in _series(e)}


def test_dashboard_and_alert_rules_name_only_series_the_code_exports():
    from linnaeus.train.metrics import exported_names as train_series
    from serve.metrics import exported_names as serve_series

    ours = serve_series() | train_series()
    ours |= {n.replace("_bucket", suffix) for n in ours if n.endswith("_bucket") for suffix in ("_sum", "_count")}
    used = {n for n in dashboard_and_rule_series() if n.startswith("ray_linnaeus_")}
    assert used and used <= ours, used - ours
    assert {"ray_linnaeus_train_images_per_s", "ray_linnaeus_train_loss", "ray_linnaeus_train_data_wait"} <= used


def test_compose_stack_wires_storage_ray_and_monitoring_from_the_env_file():
    compose = _docs(INFRA / "compose.yaml")[0]
    assert {"minio", "minio-init", "ray-head", "ray-worker", "prometheus", "grafana"} <= set(compose["services"])
    variables = set(re.findall(r"\$\{([A-Z_]+)", (INFRA / "compose.yaml").read_text()))
    defaults = {line.split("=")[0] for line in (INFRA / "env.example").read_text().splitlines()
                if "=" in line and not line.startswith("#")}
    assert variables <= defaults, variables - defaults
    assert compose["services"]["ray-head"]["build"]["dockerfile"] == "infra/docker/Dockerfile"
    targets = _docs(INFRA / "prometheus" / "prometheus.yml")[0]["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in targets} == {"ray-head", "ray-worker"}
    for port in {t.split(":")[1] for t in targets}:
        for node in ("ray-head", "ray-worker"):
            assert f"--metrics-export-port={port}" in compose["services"][node]["command"]
