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
    """A smooth photo-like image (gradients plus a little noise): decoders may differ on pure noise."""
    y, x = np.mgrid[0:120, 0:160]
    noise = np.random.default_rng(seed).normal(0, 4, (120, 160, 3))
    arr = np.stack([x * 1.5, y * 2.0, (x + y) * 0.9], axis=-1) + noise
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_cuda_decode_matches_cpu_decode_and_skips_corrupt_images():
    batch = [_jpeg(0), b"\xff\xd8 broken", _jpeg(1)]
    gpu, keep = decode_and_augment(batch, 64, (1.0, 1.0), "cuda", torch.Generator().manual_seed(0))
    cpu, keep_cpu = decode_and_augment(batch, 64, (1.0, 1.0), "cpu", torch.Generator().manual_seed(0))
    assert gpu.is_cuda and keep.tolist() == keep_cpu.tolist() == [True, False, True]
    # nvJPEG and libjpeg differ by IDCT rounding and chroma upsampling only: about a grey level.
    diff = (gpu.cpu() - cpu).abs()
    print(f"mean |diff| {diff.mean():.4f}, max {diff.max():.4f} (normalised units)")
    assert diff.mean() < 0.03


def test_hybrid_upload_and_crops_on_cuda_equal_the_cpu_ones():
    from linnaeus.data.device_decode import augment, upload_pixels

    arrays = [np.asarray(Image.open(io.BytesIO(_jpeg(i))).convert("RGB")) for i in range(3)]
    raw, heights, widths = [a.tobytes() for a in arrays], [a.shape[0] for a in arrays], [a.shape[1] for a in arrays]
    with torch.cuda.stream(torch.cuda.Stream()):  # as the prefetch thread runs it: on a side stream
        views = upload_pixels(raw, heights, widths, "cuda")
        gpu = augment(views, 64, (0.5, 1.0), torch.device("cuda"), torch.Generator().manual_seed(1))
        torch.cuda.current_stream().synchronize()
    cpu = augment(upload_pixels(raw, heights, widths, "cpu"), 64, (0.5, 1.0), torch.device("cpu"),
                  torch.Generator().manual_seed(1))
    assert all(v.is_cuda for v in views) and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
