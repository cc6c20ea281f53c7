from __future__ import annotations

import pytest
import torch

from linnaeus.clip.models import create_model
from linnaeus.train.optim import build_optimizer, cosine_with_warmup, param_groups


@pytest.fixture(scope="module")
def tiny():
    return create_model("linnaeus-tiny")


def test_every_parameter_is_in_exactly_one_group(tiny):
    groups = param_groups(tiny, 0.2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(tiny.parameters()))


def test_no_decay_on_norms_biases_embeddings_and_logit_scale(tiny):
    decayed, free = param_groups(tiny, 0.2)
    decayed_ids = {id(p) for p in decayed["params"]}
    names = {n for n, p in tiny.named_parameters() if id(p) in decayed_ids}
    for name in ("logit_scale", "token_embedding.weight", "positional_embedding",
                 "visual.class_embedding", "visual.positional_embedding", "ln_final.weight"):
        assert name not in names
    assert not any(n.endswith(".bias") or ".ln_" in n for n in names)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in names
    assert decayed["weight_decay"] == 0.2 and free["weight_decay"] == 0.0


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=10, total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5) and lrs[109] < 0.001
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(
        a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_schedule_resumes_where_it_stopped():
    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, cosine_with_warmup(opt, 5, 50)
    opt, sched = make()
    for _ in range(17):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_adamw_takes_the_groups_and_bad_schedules_are_refused(tiny):
    opt = build_optimizer(tiny, lr=1e-4)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2
    with pytest.raises(ValueError, match="total_steps"):
        cosine_with_warmup(opt, 1, 0)
