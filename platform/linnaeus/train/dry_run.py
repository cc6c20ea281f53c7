"""`jobs/train.py --dry-run`: build everything a run needs (model, optimiser, schedule, TorchTrainer)
without starting Ray or fetching weights, and say what the run would do."""

from __future__ import annotations

from linnaeus.clip.models import check_init
from linnaeus.clip.text_towers import create_with_tower, make_tower
from linnaeus.objectives import make_objective
from linnaeus.train.optim import build_optimizer, cosine_with_warmup
from linnaeus.train.plan import TrainPlan
from linnaeus.train.trainer import build_trainer


def dry_run(plan: TrainPlan) -> list[str]:
    c = plan.config
    init = check_init(c.model.arch, c.model.init, c.s3)
    tower = make_tower(c.model.text_tower.name, c.model.text_tower.params)
    model = create_with_tower(c.model.arch, tower)  # the architecture only: weights are not fetched in a dry run
    objective = make_objective(c.objective.name, c.objective.params)
    objective.attach(model)
    optimizer = build_optimizer(model, c.optim.lr, c.optim.weight_decay, c.optim.betas, c.optim.eps)
    scheduler = cosine_with_warmup(optimizer, c.optim.warmup_steps, plan.total_steps)
    decayed, plain = (sum(p.numel() for p in g["params"]) for g in optimizer.param_groups)
    lrs = [c.optim.lr * scheduler.lr_lambdas[0](s) for s in (0, c.optim.warmup_steps, plan.total_steps - 1)]
    build_trainer(plan, counter=None)
    precision = c.schedule.precision if c.schedule.precision != "auto" else (
        "bf16" if c.scaling.use_gpu else "fp32")
    return [f"init       {init}",
            f"params     {decayed + plain:,} ({decayed:,} with weight decay, {plain:,} without)",
            f"lr         {lrs[0]:.3g} at step 0, {lrs[1]:.3g} after warmup, {lrs[2]:.3g} at the last step",
            f"precision  {precision}; compile {c.model.compile}; grad checkpointing "
            f"{c.model.grad_checkpointing}; grad clip {c.optim.grad_clip_norm}",
            f"speed-ups  fused attention {c.model.fused_attention}; cut text {c.data.cut_text}; "
            f"decode {c.data.decode}",
            f"parts      objective {c.objective.name}; text tower {tower.key}; text source {c.data.text_source} "
            f"({', '.join(c.data.text_types)})" + (f"; views {[v.name for v in c.data.views]}" if c.data.views else "")
            + (f"; plugins {c.plugins}" if c.plugins else ""),
            f"workers    {c.scaling.workers} x ({c.scaling.cpus_per_worker:g} CPU"
            f"{', 1 GPU' if c.scaling.use_gpu else ''})",
            "dry run: configuration, corpus, model and trainer are valid; nothing was started"]
