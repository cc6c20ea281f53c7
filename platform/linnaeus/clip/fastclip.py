"""Exact speed-ups of open_clip's CLIP for training: fused self-attention, and text cut after its last token.

Notable:
- `SelfAttention` takes the place of `nn.MultiheadAttention` in open_clip's residual blocks: one packed
  QKV projection viewed (not copied) into heads, `F.scaled_dot_product_attention`, the output
  projection. `nn.MultiheadAttention` copies q, k and v into a sequence-first layout and back, forward
  and backward. The parameters keep their names, shapes and order (`attn.in_proj_weight`,
  `attn.out_proj.weight`, ...), so checkpoints, optimiser state and exports are unchanged and plain
  open_clip loads them.
- In a text tower whose mask is open_clip's causal mask, the blocks run `is_causal=True` instead of
  adding the float mask: the same arithmetic, and the attention kernel skips the masked half.
- Cut text: in a causal tower pooled at the end-of-text token (argmax / eos pooling), the padding after
  a caption cannot change its features, so a batch of token ids may be cut after its longest caption
  (`cut_tokens`, rounded up to `CUT_MULTIPLE` so torch.compile sees few lengths) and `encode_text`
  takes any length up to the context. The features are the same, not an approximation; only rounding
  inside kernels may differ. BioCLIP-style captions use 10-40 of CLIP's 77 tokens.
- Plain torch: nothing here knows about Ray or the data pipeline.
"""

from __future__ import annotations

import types

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, text_global_pool
from torch import nn

CUT_MULTIPLE = 16


class SelfAttention(nn.Module):
    """`nn.MultiheadAttention`'s self-attention with the same parameters, without its layout copies."""

    def __init__(self, mha: nn.MultiheadAttention, causal: bool = False):
        super().__init__()
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.num_heads, self.batch_first, self.dropout = mha.num_heads, mha.batch_first, mha.dropout
        self.causal = causal

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if key is not query or value is not query or need_weights:
            raise ValueError("SelfAttention computes self-attention only, without attention weights")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        # The causal mask open_clip passes is exactly what is_causal computes (checked in fuse_attention).
        mask = None if self.causal else _sdpa_mask(attn_mask, batch, self.num_heads, length, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _sdpa_mask(mask: torch.Tensor | None, batch: int, heads: int, length: int, dtype: torch.dtype):
    """An `nn.MultiheadAttention` mask ([L, L] or [B*H, L, L]; bool True = masked out) for SDPA."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:  # SDPA's bool masks mean the opposite (True = attend)
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.view(batch, heads, length, length) if mask.ndim == 3 else mask


def _text_parts(model: nn.Module) -> tuple[nn.Module | None, torch.Tensor | None]:
    """(the text transformer, its attention mask) of a CLIP or CustomTextCLIP; (None, None) otherwise."""
    if isinstance(model, open_clip.CLIP):
        return model.transformer, model.attn_mask
    text = getattr(model, "text", None)
    # A tower that adds per-caption padding or class-token masks to the causal one is not purely causal.
    if isinstance(text, open_clip.transformer.TextTransformer) and text.cls_emb is None \
            and not getattr(text, "use_pad_mask", False):
        return text.transformer, text.attn_mask
    return None, None


def _is_causal_mask(mask: torch.Tensor | None) -> bool:
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    causal = torch.full(mask.shape, float("-inf"), device=mask.device).triu_(1)
    return bool(torch.equal(mask.float(), causal))


def fuse_attention(model: nn.Module) -> int:
    """Swap the self-attention of every plain open_clip residual block (in place); returns how many."""
    text, mask = _text_parts(model)
    causal_blocks = {id(b) for b in text.modules()} if text is not None and _is_causal_mask(mask) else set()
    swapped = 0
    for block in model.modules():
        attn = getattr(block, "attn", None)
        if (isinstance(block, ResidualAttentionBlock) and type(attn) is nn.MultiheadAttention
                and not hasattr(block, "ln_1_kv") and attn._qkv_same_embed_dim and attn.bias_k is None
                and not attn.add_zero_attn):
            block.attn = SelfAttention(attn, causal=id(block) in causal_blocks)
            swapped += 1
    return swapped


def cut_text_problem(model_cfg: dict) -> str | None:
    """Why an architecture's text tower cannot take cut text, or None when it can (from its config)."""
    t = model_cfg.get("text_cfg", {})
    if t.get("hf_model_name") or t.get("hf_tokenizer_name"):
        return "its text tower is a Hugging Face model"
    if model_cfg.get("custom_text"):
        return "its text tower is a separate module (custom_text), which cut text does not patch"
    if t.get("no_causal_mask") or t.get("embed_cls") or model_cfg.get("multimodal_cfg"):
        return "its text tower is not causal"
    if t.get("pool_type", "argmax") not in ("argmax", "eos"):
        return f"its text tower pools by {t.get('pool_type')!r}, not at the end-of-text token"
    if t.get("pad_id", 0) != 0:
        return f"its tokenizer pads with {t.get('pad_id')}, not 0"
    return None


def _encode_cut_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's `CLIP.encode_text` for token ids cut to any length up to the context."""
    length = text.shape[1]
    cast_dtype = self.transformer.get_cast_dtype()
    x = self.token_embedding(text).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
    x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
    x = self.ln_final(x)
    x = text_global_pool(x, text, self.text_pool_type, eos_token_id=getattr(self, "text_eos_id", None))
    if self.text_projection is not None:
        x = self.text_projection(x) if isinstance(self.text_projection, nn.Linear) else x @ self.text_projection
    return F.normalize(x, dim=-1) if normalize else x


def accept_cut_text(model: nn.Module) -> None:
    """Make `model.encode_text` take token ids cut after the longest caption (`cut_tokens`), in place."""
    if not isinstance(model, open_clip.CLIP) or not _is_causal_mask(model.attn_mask) \
            or model.text_pool_type not in ("argmax", "eos"):
        raise ValueError(f"{type(model).__name__}: cut text needs open_clip's CLIP with a causal text tower "
                         "pooled at the end-of-text token")
    model.encode_text = types.MethodType(_encode_cut_text, model)


def cut_tokens(tokens, multiple: int = CUT_MULTIPLE):
    """Token ids [B, L] (numpy or torch, padded with 0) without the columns after the longest caption,
    rounded up to a multiple of `multiple` (never longer than L)."""
    used = (tokens != 0).any(0)
    used = used.numpy() if isinstance(used, torch.Tensor) else np.asarray(used)
    last = int(np.flatnonzero(used)[-1]) + 1 if used.any() else 1
    return tokens[:, :min(tokens.shape[1], -(-last // multiple) * multiple)]
