"""One optimiser step: accumulation keeps the whole contrastive batch, clamping, precision choice."""

from __future__ import annotations

import math

import pytest
import torch

from linnaeus.clip.models import create_model
from linnaeus.clip.towers import autocast
from linnaeus.objectives.clip import MAX_LOGIT_SCALE, ClipObjective
from linnaeus.train.optim import build_optimizer, cosine_with_warmup
from linnaeus.train.step import TrainStep

B = 6


def _batches(rows: int, seed: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(rows, 3, 64, 64, generator=g),
            "text": torch.randint(1, 49000, (rows, 77), generator=g)}


def _gradients_after(micro: list[dict]) -> tuple[torch.Tensor, float]:
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: keep the weights, read the grads
    step = TrainStep(model, ClipObjective(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                     torch.device("cpu"))
    result = step(micro)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), result.loss


def test_accumulation_gives_the_gradients_of_the_whole_batch():
    whole = _batches(2 * B)
    halves = [{k: v[:B] for k, v in whole.items()}, {k: v[B:] for k, v in whole.items()}]
    grads_whole, loss_whole = _gradients_after([whole])
    grads_accum, loss_accum = _gradients_after(halves)
    assert grads_whole.abs().sum() > 0
    assert torch.allclose(grads_accum, grads_whole, rtol=1e-4, atol=1e-6), (grads_accum - grads_whole).abs().max()
    assert loss_accum == pytest.approx(loss_whole, rel=1e-5)


def test_accumulation_is_not_the_mean_of_smaller_batches():
    """The naive way (a loss per micro-batch) sees fewer negatives: its gradients differ."""
    whole = _batches(2 * B)
    halves = [{k: v[:B] for k, v in whole.items()}, {k: v[B:] for k, v in whole.items()}]
    naive = sum(_gradients_after([h])[0] for h in halves)
    assert not torch.allclose(naive, _gradients_after([whole])[0], rtol=1e-3, atol=1e-5)


def test_a_step_moves_the_weights_and_clamps_the_logit_scale():
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny")
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) is far beyond CLIP's cap of 100
    before = model.visual.conv1.weight.detach().clone()
    optimizer = build_optimizer(model, lr=1e-3)
    step = TrainStep(model, ClipObjective(), optimizer, cosine_with_warmup(optimizer, 0, 10), torch.device("cpu"),
                     grad_clip_norm=1.0)
    result = step([_batches(B)])
    assert not torch.equal(before, model.visual.conv1.weight)
    assert float(model.logit_scale.detach()) <= MAX_LOGIT_SCALE + 1e-6
    assert result.logit_scale == pytest.approx(100, rel=1e-4)
    assert math.isfinite(result.loss) and result.grad_norm is not None and result.grad_norm > 0


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # building a CUDA autocast on a CPU machine
@pytest.mark.parametrize("device, precision, autocasts", [
    ("cpu", "auto", False), ("cpu", "fp32", False), ("cpu", "bf16", True), ("cuda", "auto", True),
    ("cuda", "fp32", False)])
def test_precision_auto_means_bf16_on_gpu_and_fp32_on_cpu(device, precision, autocasts):
    ctx = autocast(torch.device(device), precision)
    assert isinstance(ctx, torch.autocast) == autocasts


def test_gradient_checkpointing_changes_memory_not_gradients():
    batch = _batches(B)
    plain, _ = _gradients_after([batch])
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny")
    model.set_grad_checkpointing(True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    TrainStep(model, ClipObjective(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
              torch.device("cpu"))([batch])
    checkpointed = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(checkpointed, plain, rtol=1e-4, atol=1e-6)


def test_accumulation_under_ddp_syncs_every_parameter_step_after_step(tmp_path):
    """DDP expects every parameter's gradient in the synchronised (last) pass; a temperature detached
    there leaves a reduction unfinished and the next step raises."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(create_model("linnaeus-tiny"))
        optimizer = build_optimizer(model.module, lr=1e-4)
        step = TrainStep(model, ClipObjective(None, 0, 1), optimizer, cosine_with_warmup(optimizer, 0, 5),
                         torch.device("cpu"))
        batch = _batches(2 * B)
        halves = [{k: v[:B] for k, v in batch.items()}, {k: v[B:] for k, v in batch.items()}]
        losses = [step(halves).loss for _ in range(3)]
        assert all(math.isfinite(x) for x in losses) and model.module.logit_scale.grad is not None
    finally:
        dist.destroy_process_group()


def test_each_text_length_compiles_its_own_static_graph():
    from linnaeus.clip import fastclip

    graphs = []

    def backend(gm, example_inputs):  # records what dynamo hands over, runs the graph as is
        graphs.append(any(isinstance(x, torch.SymInt) for x in example_inputs))
        return gm.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny")
    fastclip.fuse_attention(model)
    fastclip.accept_cut_text(model)
    model.compile(backend=backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainStep(model, ClipObjective(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                     torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    for length in (16, 32, 16, 48):
        step([{"image": torch.randn(2, 3, 64, 64, generator=g),
               "text": torch.randint(1, 999, (2, length), generator=g)}])
    torch._dynamo.reset()
    # One graph per length (the repeated 16 reuses its graph), none of them shape-generic.
    assert len(graphs) == 3 and not any(graphs)
