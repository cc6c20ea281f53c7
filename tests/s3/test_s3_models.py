"""Models exported to and initialised from s3:// (moto's server on loopback; no Ray needed)."""

from __future__ import annotations

import pytest
import torch

from linnaeus.clip.exports import WEIGHTS_NAME, export_model
from linnaeus.clip.models import create_model

pytestmark = pytest.mark.usefixtures("s3_endpoint")


def test_export_to_s3_and_init_from_s3_round_trip():
    torch.manual_seed(1)
    model = create_model("linnaeus-tiny")
    out = export_model(model, "linnaeus-tiny", "s3://models/tiny-run")
    again = create_model("linnaeus-tiny", init=f"{out.uri}/{WEIGHTS_NAME}")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
