"""AdamW with open_clip's decay rules, and a cosine learning-rate schedule with linear warmup.

Notable:
- No weight decay on norms, biases, embeddings (token, positional, class) or the logit scale, as
  open_clip's trainer does: decaying them shrinks what should stay free (the temperature, the gains).
- The schedule is a LambdaLR, so its position is in `scheduler.state_dict()` and a resumed run continues
  the curve exactly where it stopped.
- Plain torch; nothing here knows about Ray.
"""

from __future__ import annotations

import math

import torch

NO_DECAY_MARKERS = ("bias", "logit_scale", "embedding", "ln_", ".ln", "norm", "bn")


def decays(name: str, param: torch.nn.Parameter) -> bool:
    """Whether a parameter gets weight decay: matrices only, and none of the excluded kinds."""
    return param.ndim >= 2 and not any(marker in name for marker in NO_DECAY_MARKERS)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.2,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6) -> torch.optim.AdamW:
    """AdamW (fused kernels on CUDA) with CLIP's betas/eps defaults."""
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused or None)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base lr over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
