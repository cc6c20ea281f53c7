"""The training step on CUDA: bf16 autocast by default, fused AdamW, and the loss falls on a fixed batch."""

from __future__ import annotations

import pytest
import torch

from linnaeus.clip.models import create_model
from linnaeus.objectives.clip import ClipObjective
from linnaeus.train.optim import build_optimizer, cosine_with_warmup
from linnaeus.train.step import TrainStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_bf16_steps_on_cuda_lower_the_loss_on_a_fixed_batch():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny").to(device)
    optimizer = build_optimizer(model, lr=1e-3)
    assert optimizer.defaults.get("fused") is True
    step = TrainStep(model, ClipObjective(), optimizer, cosine_with_warmup(optimizer, 2, 40), device)
    g = torch.Generator().manual_seed(1)
    half = {"image": torch.randn(16, 3, 64, 64, generator=g).to(device),
            "text": torch.randint(1, 49000, (16, 77), generator=g).to(device)}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model.encode_image(half["image"]).dtype == torch.bfloat16
    losses = [step([half]).loss for _ in range(30)]
    assert losses[-1] < losses[0] - 1.0, losses


def test_bf16_accumulation_points_the_gradients_where_the_whole_batch_does():
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(2)
    whole = {"image": torch.randn(16, 3, 64, 64, generator=g).to(device),
             "text": torch.randint(1, 49000, (16, 77), generator=g).to(device)}
    grads = []
    for micro in ([whole], [{k: v[:8] for k, v in whole.items()}, {k: v[8:] for k, v in whole.items()}]):
        torch.manual_seed(0)
        model = create_model("linnaeus-tiny").to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        TrainStep(model, ClipObjective(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                  device)(micro)
        grads.append(torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None]))
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
