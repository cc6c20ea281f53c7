"""FP8 matmuls for training on Hopper and later (torchao's float8 training), as `schedule.precision: fp8`.

Notable:
- Only the MLP linears of both towers are converted (two thirds of a block's matmul FLOPs). The
  attention projections stay bf16: the packed QKV weight is a bare parameter passed to `F.linear`
  (in `nn.MultiheadAttention` and in `fastclip.SelfAttention` alike), so a swapped module there would
  silently stay bf16; layers whose sizes are not multiples of 16 (FP8
  kernels need them) and the projection heads stay bf16 too. Everything else runs under bf16 autocast.
- The swapped layers keep their parameter names and shapes, so checkpoints and the exported model
  are the same as a bf16 run's (a plain open_clip model loads them).
- `fp8` is torchao's tensorwise recipe (fastest, wants torch.compile to fuse the scaling);
  `fp8-rowwise` scales per row (closer to bf16, slower).
- torchao is an optional dependency (`pip install 'linnaeus[fp8]'`); recipes asking for FP8 without it
  fail when they are validated, before any cluster work.
"""

from __future__ import annotations

import importlib.util

import torch

RECIPES = {"fp8": "tensorwise", "fp8-rowwise": "rowwise"}
MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first chips with FP8 tensor cores


def available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def convertible(module: torch.nn.Module, name: str) -> bool:
    """Whether a submodule becomes an FP8 linear: a plain Linear of an MLP, sizes multiples of 16."""
    if type(module) is not torch.nn.Linear:  # attention's out_proj is a Linear subclass: left in bf16
        return False
    return ".mlp." in f".{name}." and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert(model: torch.nn.Module, precision: str, device: torch.device) -> int:
    """Swap the convertible linears of `model` (in place) for torchao's Float8Linear; returns how many."""
    if precision not in RECIPES:
        raise ValueError(f"precision {precision!r} is not an FP8 recipe ({sorted(RECIPES)})")
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < MIN_CAPABILITY:
        raise RuntimeError(f"precision {precision}: {torch.cuda.get_device_name(device)} has no FP8 tensor "
                           f"cores (needs compute capability >= 8.9); use bf16")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as exc:
        raise RuntimeError(f"precision {precision} needs torchao: pip install 'linnaeus[fp8]' ({exc})") from None
    before = sum(type(m) is torch.nn.Linear for m in model.modules())
    convert_to_float8_training(model, module_filter_fn=convertible,
                               config=Float8LinearConfig.from_recipe_name(RECIPES[precision]))
    return before - sum(type(m) is torch.nn.Linear for m in model.modules())
