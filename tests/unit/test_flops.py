"""FLOPs per image from the architecture config: equal to torch's FlopCounterMode on real open_clip
models, and the MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from linnaeus.bench.flops import mfu, peak_bf16_tflops, step_flops
from linnaeus.clip import fastclip
from linnaeus.clip.models import create_model, model_config
from linnaeus.objectives.clip import clip_loss

B = 3


def _counted(arch: str, backward: bool, text_tokens: int = 77) -> float:
    torch.manual_seed(0)
    model, cfg = create_model(arch), model_config(arch)
    if text_tokens < 77:  # the training path: fused attention, text cut after the longest caption
        fastclip.fuse_attention(model)
        fastclip.accept_cut_text(model)
    size = cfg["vision_cfg"]["image_size"]
    images, texts = torch.randn(B, 3, size, size), torch.randint(1, 1000, (B, text_tokens))
    # The math attention kernel is made of matmuls the counter sees; fused CPU kernels are not counted.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        loss = clip_loss()(*model(images, texts))
        if backward:
            loss.backward()
    return counter.get_total_flops() / B


@pytest.mark.parametrize("backward", [False, True])
def test_formula_equals_torchs_flop_counter_on_the_tiny_model(backward):
    f = step_flops(model_config("linnaeus-tiny"), B)
    assert _counted("linnaeus-tiny", backward) == pytest.approx(f.train if backward else f.forward, rel=1e-9)


def test_formula_counts_the_tokens_of_cut_text():
    f = step_flops(model_config("linnaeus-tiny"), B, text_tokens=16)
    assert _counted("linnaeus-tiny", True, text_tokens=16) == pytest.approx(f.train, rel=1e-9)
    assert f.text_forward < step_flops(model_config("linnaeus-tiny"), B).text_forward / 4


def test_formula_follows_the_config_not_a_table():
    base = model_config("linnaeus-tiny")
    wider = {**base, "vision_cfg": {**base["vision_cfg"], "width": 256, "layers": 3, "mlp_ratio": 2.0}}
    assert step_flops(wider, B).vision_forward > step_flops(base, B).vision_forward
    assert step_flops(wider, B).text_forward == step_flops(base, B).text_forward


def test_vit_b16_costs_the_published_124_gflop_per_image():
    # ~124 GFLOP per image for a ViT-B/16 CLIP training step, as torch's counter gave on the GPU.
    assert step_flops(model_config("ViT-B-16"), 512).train / 1e9 == pytest.approx(123.0, abs=0.1)


def test_the_logits_grow_with_the_global_batch():
    cfg = model_config("linnaeus-tiny")
    assert step_flops(cfg, 1024).train - step_flops(cfg, 512).train == pytest.approx(3 * 4 * 512 * 64)


def test_mfu_and_datasheet_peaks():
    assert mfu(2000.0, 123e9, 989.4) == pytest.approx(2000 * 123e9 / 989.4e12)
    assert mfu(2000.0, 123e9, None) is None
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.4 and peak_bf16_tflops("Some Future GPU") is None
