"""The Predictor on CUDA: CUDA-graph replays give the eager model's features for every batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model
from linnaeus.serving.predictor import Predictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_graph_features_equal_eager_features_for_any_batch_size(tmp_path):
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", str(tmp_path))
    eager = Predictor(str(tmp_path), device="cuda")
    graphed = Predictor(str(tmp_path), device="cuda", cuda_graphs=8)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)) for _ in range(19)]
    pixels = torch.stack([eager.pixels(im) for im in images])
    for n in (1, 3, 8, 19):  # inside a bucket, exactly one, and more than the largest (chunked)
        torch.testing.assert_close(graphed.encode_pixels(pixels[:n]), eager.encode_pixels(pixels[:n]),
                                   rtol=0, atol=2e-3)
    # padding rows left from a bigger batch never leak into a smaller one
    torch.testing.assert_close(graphed.encode_pixels(pixels[5:6]), eager.encode_pixels(pixels[5:6]), rtol=0, atol=2e-3)
