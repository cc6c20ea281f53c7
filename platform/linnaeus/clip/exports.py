"""Exported models: open_clip's own layout, written by training and read by evaluation, label banks,
bulk prediction and the service.

Notable:
- `export_model` writes what open_clip itself reads, so models leave the platform without it:
  `open_clip_config.json` (model and preprocess config) + `open_clip_pytorch_model.bin` (state dict).
  `open_clip.create_model_and_transforms(arch, pretrained=".../open_clip_pytorch_model.bin")` loads it
  for a built-in architecture, and `create_model_and_transforms("local-dir:<folder>")` for any.
- Linnaeus adds three keys to the config: `linnaeus_arch` (the architecture's name),
  `linnaeus_text_tower` (the tower's key and parameters; absent means open_clip's own) and
  `linnaeus_plugins` (modules to import before building, for parts defined outside the package). A
  model with another text tower is not a plain open_clip model: only Linnaeus reads it back.
- `read_export` reads the files without building the model; `Export.build` builds it, and its digest
  (of the weights) keys label banks and label caches.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch

from linnaeus import storage
from linnaeus.clip.models import ModelLoadError, create_model, load_weights, model_config, register_configs
from linnaeus.clip.text_towers import TextTower, make_tower, tower_of
from linnaeus.registry import load_plugins

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"


def export_model(model: torch.nn.Module, arch: str, output: str, s3: storage.S3Options | None = None,
                 plugins: list[str] | tuple[str, ...] = ()) -> storage.Location:
    """Write `model` in open_clip's own layout under `output` (folder or s3:// prefix); `plugins` are the
    modules its parts came from, imported again by whoever builds it."""
    out = storage.resolve(output, s3)
    storage.ensure_bucket(out)
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    config = {"model_cfg": model_config(arch), "preprocess_cfg": preprocess, "linnaeus_arch": arch}
    tower = tower_of(model)
    if tower.key != "open_clip":
        config["linnaeus_text_tower"] = tower.describe()
    if plugins:
        config["linnaeus_plugins"] = list(plugins)
    storage.write_bytes(out.join(CONFIG_NAME), json.dumps(config, indent=1).encode())
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    storage.write_bytes(out.join(WEIGHTS_NAME), buf.getvalue())
    return out


@dataclass(frozen=True)
class Export:
    """An exported model as stored: its architecture, its open_clip config and its weights' bytes."""

    uri: str
    arch: str
    config: dict
    weights: bytes = field(repr=False)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the weights (16 hex digits): what label banks and caches are keyed by."""
        return hashlib.sha256(self.weights).hexdigest()[:16]

    @property
    def plugins(self) -> list[str]:
        return list(self.config.get("linnaeus_plugins") or [])

    def tower(self) -> TextTower:
        load_plugins(self.plugins)
        spec = dict(self.config.get("linnaeus_text_tower") or {"name": "open_clip"})
        return make_tower(spec.pop("name"), spec, field=f"{self.uri}: linnaeus_text_tower")

    def tokenizer(self):
        return self.tower().tokenizer(self.arch)

    def build(self) -> torch.nn.Module:
        tower = self.tower()
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / WEIGHTS_NAME
            weights.write_bytes(self.weights)
            if tower.key == "open_clip":
                return load_weights(self.arch, str(weights))
            model = tower.build(create_model(self.arch), self.arch)
            try:
                model.load_state_dict(torch.load(weights, map_location="cpu"))
            except RuntimeError as exc:
                raise ModelLoadError(f"{self.uri}: weights do not fit {self.arch} with text tower "
                                     f"{tower.key!r}: {str(exc)[:300]}") from None
            return model


def read_export_config(uri: str, s3: storage.S3Options | None = None) -> dict:
    """An export's `open_clip_config.json` alone (model and preprocess config), without the weights."""
    config_loc = storage.resolve(uri, s3).join(CONFIG_NAME)
    if not storage.exists(config_loc):
        raise ModelLoadError(f"{storage.resolve(uri, s3).uri}: not an exported model ({CONFIG_NAME} is missing)")
    return json.loads(storage.read_bytes(config_loc))


def read_export(uri: str, s3: storage.S3Options | None = None) -> Export:
    """Read a model exported by `export_model` (folder or s3:// prefix) without building it."""
    loc = storage.resolve(uri, s3)
    config = read_export_config(uri, s3)
    arch = config.get("linnaeus_arch") or _arch_of(config["model_cfg"])
    model_config(arch)  # registers the project's architectures in this process
    return Export(loc.uri, arch, config, storage.read_bytes(loc.join(WEIGHTS_NAME)))


def load_exported(uri: str, s3: storage.S3Options | None = None) -> tuple[torch.nn.Module, str]:
    """A model exported by `export_model` (folder or s3:// prefix) and its architecture name."""
    export = read_export(uri, s3)
    return export.build(), export.arch


def _arch_of(model_cfg: dict) -> str:
    register_configs()
    for name in open_clip.list_models():
        if open_clip.get_model_config(name) == model_cfg:
            return name
    raise ModelLoadError("the exported config matches no known open_clip architecture")
