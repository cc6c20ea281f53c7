"""Text towers: the part of a model that turns captions into features, as a registry.

Notable:
- A tower declares what the data pipeline and the recipe checks need from it: its tokenizer (texts ->
  token ids [N, L]), its context length L, and whether a batch of token ids may be cut after its
  longest caption (`cut_text_problem`: None when it may, else why not).
- `open_clip` (the default) is the architecture's own causal text transformer: the model is the open_clip
  CLIP as built, and cut text is `fastclip`'s exact speed-up.
- Any other tower replaces the text side. `TowerCLIP` keeps the open_clip model's image tower and logit
  scale and puts the tower's module beside them, with open_clip's CLIP interface (`encode_image`,
  `encode_text`, `forward` -> image features, text features, logit scale), so training, evaluation,
  label banks and serving run it unchanged. Its export names the tower (`linnaeus.clip.exports`).
- Plain torch; a tower's parameters are its recipe fields (`model.text_tower: {name: ..., ...}`).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from linnaeus import storage
from linnaeus.clip import fastclip
from linnaeus.clip.models import create_model, model_config, tokenizer
from linnaeus.registry import NoParams, Registry, params_model

Tokenizer = Callable[[list[str]], torch.Tensor]


class TextTower:
    """A registered text tower; built from its validated Params."""

    key: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else params_model(type(self))()

    def context_length(self, arch: str) -> int:
        raise NotImplementedError

    def tokenizer(self, arch: str, context_length: int | None = None) -> Tokenizer:
        """Texts -> token ids [N, context_length] (default: the tower's own context length)."""
        raise NotImplementedError

    def cut_text_problem(self, arch: str) -> str | None:
        """Why token ids may not be cut after a batch's longest caption, or None when they may."""
        return "this text tower does not say that cut text leaves its features unchanged"

    def build(self, model: nn.Module, arch: str) -> nn.Module:
        """The open_clip `model` of `arch` with this tower as its text side."""
        raise NotImplementedError

    def accept_cut_text(self, model: nn.Module) -> None:
        """Make `model.encode_text` take cut token ids (called only when `cut_text_problem` is None)."""

    def describe(self) -> dict:
        """The tower as an export records it: its key and its parameters."""
        return {"name": self.key, **self.params.model_dump(mode="json")}


TEXT_TOWERS: Registry[TextTower] = Registry("text tower")


@TEXT_TOWERS.register("open_clip")
class OpenClipTower(TextTower):
    """The architecture's own text transformer (open_clip's tokenizer and context length)."""

    def context_length(self, arch: str) -> int:
        return model_config(arch)["text_cfg"].get("context_length", 77)

    def tokenizer(self, arch: str, context_length: int | None = None) -> Tokenizer:
        return tokenizer(arch, context_length or self.context_length(arch))

    def cut_text_problem(self, arch: str) -> str | None:
        return fastclip.cut_text_problem(model_config(arch))

    def build(self, model: nn.Module, arch: str) -> nn.Module:
        return model

    def accept_cut_text(self, model: nn.Module) -> None:
        fastclip.accept_cut_text(model)


def make_tower(name: str = "open_clip", params: dict | BaseModel | None = None, field: str = "text_tower"
               ) -> TextTower:
    """A tower by registry key, its parameters validated (a dict from a recipe or an export)."""
    cls = TEXT_TOWERS.get(name, field)
    if isinstance(params, dict):
        params = params_model(cls).model_validate(params)
    return cls(params)


def create_with_tower(arch: str, tower: TextTower, init: str | None = None, s3: storage.S3Options | None = None,
                      seed: int | None = None) -> nn.Module:
    """`create_model` (random from `seed`, or from `init`), then `tower` as its text side: the tower's own
    random initialisation follows from the same seed."""
    return tower.build(create_model(arch, init, s3, seed), arch)


class TowerCLIP(nn.Module):
    """An open_clip model's image tower and logit scale with another text tower, as one CLIP."""

    def __init__(self, model: nn.Module, text: nn.Module, tower: TextTower):
        super().__init__()
        self.visual = model.visual
        self.text = text
        self.logit_scale = model.logit_scale
        self.logit_bias = getattr(model, "logit_bias", None)
        self.tower = tower  # not a module: what the model was built with (tokenizer, export record)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.logit_bias is not None:
            return image_features, text_features, self.logit_scale.exp(), self.logit_bias
        return image_features, text_features, self.logit_scale.exp()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        if hasattr(self.text, "set_grad_checkpointing"):
            self.text.set_grad_checkpointing(enable)


def tower_of(model: nn.Module) -> TextTower:
    """The text tower a model was built with (open_clip's own unless it is a TowerCLIP)."""
    return model.tower if isinstance(model, TowerCLIP) else OpenClipTower()


def model_tokenizer(model: nn.Module, arch: str) -> Tokenizer:
    """The tokenizer that goes with `model`'s text tower."""
    return tower_of(model).tokenizer(arch)
