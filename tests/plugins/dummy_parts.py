"""A second entry in each registry, defined only for the tests: an objective, a text tower and a text
source that a recipe names under `plugins: [tests.plugins.dummy_parts]`, with no change to the trainer,
the stream, the Predictor or the service (tests/ray/test_plugins.py runs them through all four).

- `test-ema`: CLIP's contrastive loss plus agreement with an EMA teacher of the image tower, which sees an
  extra view of each image. It owns state that checkpoints must carry: the teacher, a count of its
  updates and a count of the processes that stepped it (`lives`): after one restart, `lives` is 2 only
  if the state came back from the checkpoint.
- `test-bag`: a bag-of-tokens text tower (mean of token embeddings, then a projection) with its own
  context length; padding does not change its features, so it takes cut text.
- `test-kingdom`: captions from the kingdom, or the common name and genus, of each row.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from linnaeus.clip.models import model_config, tokenizer
from linnaeus.clip.text_towers import TEXT_TOWERS, TextTower, TowerCLIP
from linnaeus.objectives import OBJECTIVES, Objective, View, unwrap
from linnaeus.objectives.clip import clip_loss
from linnaeus.text import TEXT_SOURCES, TextSource


class EmaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = 0.5
    momentum: float = 0.9
    view_size: int = 64


@OBJECTIVES.register("test-ema")
class EmaObjective(Objective):
    Params = EmaParams

    def __init__(self, params=None, rank: int = 0, world_size: int = 1):
        super().__init__(params, rank, world_size)
        self.contrastive = clip_loss(rank, world_size)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("lives", torch.zeros((), dtype=torch.long))
        self.teacher: nn.Module | None = None
        self._alive = False  # this process has stepped the teacher

    @classmethod
    def views(cls, params: EmaParams) -> tuple[View, ...]:
        return (View(name="second", size=params.view_size, scale=(0.4, 0.8)),)

    def attach(self, model: nn.Module) -> None:
        self.teacher = copy.deepcopy(unwrap(model).visual).requires_grad_(False)

    def loss(self, model, batch):
        image_features, text_features, logit_scale = model(batch["image"], batch["text"])
        with torch.no_grad():
            target = F.normalize(self.teacher(batch["view_second"]).float(), dim=-1)
        agreement = 1 - (image_features.float() * target).sum(-1).mean()
        return {"loss": self.contrastive(image_features, text_features, logit_scale) + self.params.weight * agreement,
                "agreement": agreement}

    @torch.no_grad()
    def after_step(self, model):
        student = unwrap(model).visual.state_dict()
        for name, value in self.teacher.state_dict().items():
            if value.is_floating_point():
                value.mul_(self.params.momentum).add_(student[name].detach(), alpha=1 - self.params.momentum)
        self.updates += 1
        if not self._alive:
            self.lives += 1
            self._alive = True
        return {"teacher_updates": self.updates.clone()}


class BagParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    context_length: int = 24
    width: int = 32


class BagOfTokens(nn.Module):
    def __init__(self, vocab: int, width: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=0)
        self.proj = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        used = (tokens != 0).unsqueeze(-1)
        pooled = (self.embed(tokens) * used).sum(1) / used.sum(1).clamp(min=1)
        return self.proj(pooled)


@TEXT_TOWERS.register("test-bag")
class BagTower(TextTower):
    Params = BagParams

    def context_length(self, arch: str) -> int:
        return self.params.context_length

    def tokenizer(self, arch: str, context_length: int | None = None):
        return tokenizer(arch, context_length or self.params.context_length)

    def cut_text_problem(self, arch: str) -> str | None:
        return None  # a mean over the caption's tokens: padding after it changes nothing

    def build(self, model: nn.Module, arch: str) -> nn.Module:
        cfg = model_config(arch)
        bag = BagOfTokens(cfg["text_cfg"].get("vocab_size", 49408), self.params.width, cfg["embed_dim"])
        return TowerCLIP(model, bag, self)


@TEXT_SOURCES.register("test-kingdom")
class KingdomSource(TextSource):
    columns = ("kingdom", "genus", "common_name")
    kinds = ("kingdom", "genus_common")

    def items(self, columns):
        return [dict(zip(self.columns, values)) for values in zip(*(columns[c] for c in self.columns))]

    def caption(self, item: dict, kind: str) -> str | None:
        if kind == "kingdom":
            return f"a living thing of the kingdom {item['kingdom']}" if item["kingdom"] else None
        if item["genus"] and item["common_name"]:
            return f"a {item['common_name']} of the genus {item['genus']}"
        return None
