"""Model specs for evaluation: exported models, a run's exact initialisation, architectures by name."""

from __future__ import annotations

import json

import pytest
import torch

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import ModelLoadError, create_model
from linnaeus.eval.modelref import describe, load_model
from linnaeus.runs import RECORD_NAME as RECORD_NAME
from linnaeus.runs import init_seed


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_init_spec_rebuilds_the_weights_a_run_started_from(tmp_path):
    (tmp_path / RECORD_NAME).write_text(json.dumps({"name": "r", "total_steps": 1, "rows": 1, "units": 1,
                                                         "config": {"model": {"arch": "linnaeus-tiny"}, "seed": 7}}))
    model, arch = load_model(f"init:{tmp_path}")
    assert arch == "linnaeus-tiny"
    assert _same(model, create_model("linnaeus-tiny", seed=init_seed(7, 0)))  # what the loop's rank 0 builds
    assert not _same(model, create_model("linnaeus-tiny", seed=init_seed(8, 0)))


def test_exported_spec_loads_the_model_and_names_its_architecture(tmp_path):
    original = create_model("linnaeus-tiny", seed=3)
    export_model(original, "linnaeus-tiny", str(tmp_path / "runs" / "r1" / "export"))
    model, arch = load_model(str(tmp_path / "runs" / "r1" / "export"))
    assert arch == "linnaeus-tiny" and _same(model, original)
    assert describe(str(tmp_path / "runs" / "r1" / "export")) == "r1/export"
    assert describe(f"init:{tmp_path}/runs/r1") == "init:runs/r1" and describe("arch:ViT-B-16") == "arch:ViT-B-16"


@pytest.mark.parametrize("spec, message", [("init:/nowhere/run", "not a Linnaeus run folder"),
                                           ("/nowhere/export", "not an exported model")])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec)
