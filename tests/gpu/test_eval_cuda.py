"""Evaluation's text side on CUDA (bf16): the zero-shot classifier and caption features match the CPU's."""

from __future__ import annotations

import pytest
import torch

from linnaeus.eval import evaluate as ev
from linnaeus.eval import zeroshot
from linnaeus.models import create_model, tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_text_features_on_the_gpu_match_the_cpu_within_bf16_precision():
    names = ["Pica hudsonia", "Corvus corax", "Animalia Chordata Aves", "black-billed magpie"]
    cpu = create_model("linnaeus-tiny", seed=0).eval()
    reference = zeroshot.classifier(cpu, tokenizer("linnaeus-tiny", 77), names, zeroshot.TEMPLATES["openai"])
    captions = ev._texts(cpu, "linnaeus-tiny", names)
    gpu = create_model("linnaeus-tiny", seed=0).eval().to("cuda")
    weights = ev._classifier(gpu, "linnaeus-tiny", names, "openai")
    assert weights.device.type == "cpu" and weights.shape == reference.shape
    torch.testing.assert_close(weights, reference, rtol=0, atol=3e-2)
    torch.testing.assert_close(ev._texts(gpu, "linnaeus-tiny", names), captions, rtol=0, atol=3e-2)
    assert (weights.T @ reference).diagonal().min() > 0.99  # same directions
