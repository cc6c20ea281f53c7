"""nvJPEG path of the stream's GPU decode mode (skipped without CUDA)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from linnaeus.data.device_decode import decode_and_augment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_cuda_decode_matches_cpu_decode_and_skips_corrupt_images():
    batch = [_jpeg(0), b"\xff\xd8 broken", _jpeg(1)]
    gpu, keep = decode_and_augment(batch, 64, (1.0, 1.0), "cuda", torch.Generator().manual_seed(0))
    cpu, keep_cpu = decode_and_augment(batch, 64, (1.0, 1.0), "cpu", torch.Generator().manual_seed(0))
    assert gpu.is_cuda and keep.tolist() == keep_cpu.tolist() == [True, False, True]
    # nvJPEG and libjpeg differ by IDCT rounding only.
    assert torch.allclose(gpu.cpu(), cpu, atol=0.15)
