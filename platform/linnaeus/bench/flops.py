"""FLOPs per image of a CLIP training step, derived from the open_clip architecture config, and MFU.

Notable:
- Counted the way torch's FlopCounterMode counts (2 FLOPs per multiply-add, matmuls and attention
  only; norms, activations and the optimiser are free): a forward pass, plus a backward of twice the
  forward, less the input-gradient of the patch embedding (pixels need no gradient).
  tests/unit/test_flops.py holds the formula to FlopCounterMode on real open_clip models.
- Attention is counted in full (n x n), the text tower's causal mask included (as open_clip's float mask
  makes the kernels compute it; the fused causal kernels skip about half, so this counts high there).
- The text tower counts `text_tokens` tokens per caption: the full context unless the batches are cut
  (`data.cut_text`), when it is the length the run actually computed.
- The contrastive logits depend on the global batch (each image is scored against every text), so the
  figure is per image *at a given global batch*.
- MFU is reported against the chip's dense bf16 datasheet rate (`PEAK_BF16_TFLOPS`, by device name)
  and against a bf16 matmul rate measured on the spot (`measure_matmul_tflops`), which is what the
  chip really sustains here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# Dense (no sparsity) bf16 tensor-core rates from the vendors' datasheets, TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0}


def _transformer_forward(tokens: int, width: int, layers: int, mlp_ratio: float) -> float:
    mlp = int(width * mlp_ratio)
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    return layers * per_layer


@dataclass(frozen=True)
class StepFlops:
    vision_forward: float
    text_forward: float
    logits_forward: float
    patch_embed_forward: float

    @property
    def forward(self) -> float:
        return self.vision_forward + self.text_forward + self.logits_forward

    @property
    def train(self) -> float:
        """Forward + backward (2x forward, without the pixels' gradient), per image."""
        return 3 * self.forward - self.patch_embed_forward


def step_flops(model_cfg: dict, global_batch: int, text_tokens: float | None = None) -> StepFlops:
    """FLOPs per image for an open_clip CLIP config (`linnaeus.clip.models.model_config(arch)`), with captions
    of `text_tokens` tokens (default: the full context)."""
    v, t, embed = model_cfg["vision_cfg"], model_cfg["text_cfg"], model_cfg["embed_dim"]
    size = v.get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    patch = v["patch_size"]
    patches = (size // patch) ** 2
    width = v["width"]
    patch_embed = 2 * patches * 3 * patch * patch * width
    vision = (patch_embed + _transformer_forward(patches + 1, width, v["layers"], v.get("mlp_ratio", 4.0))
              + 2 * width * embed)
    tokens = text_tokens or t.get("context_length", 77)
    text = _transformer_forward(tokens, t["width"], t["layers"], t.get("mlp_ratio", 4.0)) + 2 * t["width"] * embed
    logits = 2 * 2 * global_batch * embed  # image->text and text->image rows of this image
    return StepFlops(vision, text, logits, patch_embed)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The datasheet dense bf16 rate for a CUDA device name, or None for an unknown chip."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_TFLOPS[key]
    return None


def measure_matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """The bf16 matmul rate this device sustains on square matrices, TFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): timings are taken between two of these."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(images_per_s: float, flops_per_image: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: the share of `peak_tflops` that the training step's FLOPs use."""
    if not peak_tflops:
        return None
    return images_per_s * flops_per_image / (peak_tflops * 1e12)
