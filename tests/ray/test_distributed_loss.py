"""Two Ray Train workers (CPU, gloo) x batch B give the gradients of one process on the 2B batch."""

from __future__ import annotations

import tempfile

import pytest
import torch

pytestmark = pytest.mark.usefixtures("ray_local")
B = 4
PROBES = torch.arange(0, 200_000, 997)  # fixed positions in the flattened gradient vector


def _batch(rows: slice):
    g = torch.Generator().manual_seed(7)
    images = torch.randn(2 * B, 3, 64, 64, generator=g)
    tokens = torch.randint(1, 49000, (2 * B, 77), generator=g)
    return images[rows], tokens[rows]


def _gradients(model) -> list[float]:
    flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return flat[PROBES[PROBES < flat.numel()]].tolist()


def _step(model, loss_fn, images, tokens):
    image_features, text_features, logit_scale = model(images, tokens)
    loss_fn(image_features, text_features, logit_scale).backward()


def _worker_loop():
    import ray.train
    import ray.train.torch

    from linnaeus.clip.models import create_model
    from linnaeus.objectives.clip import clip_loss

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(create_model("linnaeus-tiny"))  # DDP averages gradients
    _step(model, clip_loss(rank, world), *_batch(slice(rank * B, (rank + 1) * B)))
    # Train V2 keeps metrics with checkpoints: rank 0 ships the gradients as one, every rank reports.
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save(_gradients(model.module), f"{tmp}/grads.pt")
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"rank": rank}, checkpoint=checkpoint)


def test_two_workers_match_one_worker_on_the_whole_batch(tmp_path):
    import sys

    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from linnaeus.clip.models import create_model
    from linnaeus.objectives.clip import clip_loss

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on workers' path
    trainer = TorchTrainer(
        _worker_loop,
        # Fractional CPUs: on 2 cores, workers that each reserve a whole CPU can starve everything else.
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path), name="grad-equivalence"))
    with trainer.fit().checkpoint.as_directory() as folder:
        distributed = torch.tensor(torch.load(f"{folder}/grads.pt"))

    torch.manual_seed(0)
    model = create_model("linnaeus-tiny")
    _step(model, clip_loss(), *_batch(slice(0, 2 * B)))
    single = torch.tensor(_gradients(model))
    assert single.abs().sum() > 0 and distributed.shape == single.shape
    assert torch.allclose(distributed, single, rtol=1e-4, atol=1e-6), (distributed - single).abs().max()
