"""Which model to evaluate, as a string that travels to Ray actors instead of the weights.

    <uri>                 a model exported by training (folder or s3:// prefix with open_clip_config.json)
    init:<run-uri>        the exact weights a training run started from (its recipe's seed, or its
                          `model.init`): "trained vs its own initialisation" with nothing stored
    arch:<name>[@<init>]  an open_clip architecture, random (seed 0) or from a tag / checkpoint

Hub tags (`openai`, `hf-hub:`) need network access and fail fast without it (`linnaeus.clip.models`).
"""

from __future__ import annotations

import torch

from linnaeus import runs, storage
from linnaeus.clip.exports import load_exported
from linnaeus.clip.models import ModelLoadError, create_model
from linnaeus.clip.text_towers import create_with_tower, make_tower
from linnaeus.registry import load_plugins


def load_model(spec: str) -> tuple[torch.nn.Module, str]:
    """The model a spec names, and its open_clip architecture (for the tokenizer)."""
    if spec.startswith("arch:"):
        arch, _, init = spec[len("arch:"):].partition("@")
        return create_model(arch, init or None, seed=0), arch
    if spec.startswith("init:"):
        return _initial(spec[len("init:"):])
    return load_exported(spec)


def describe(spec: str) -> str:
    """A short label for report columns: the last two path parts of a URI (`<run>/export`)."""
    if spec.startswith("arch:"):
        return spec
    prefix = "init:" if spec.startswith("init:") else ""
    return prefix + "/".join(spec[len(prefix):].rstrip("/").split("/")[-2:])


def _initial(run_uri: str) -> tuple[torch.nn.Module, str]:
    try:
        config = runs.read_record(storage.resolve(run_uri)).config
    except runs.RunError as exc:
        raise ModelLoadError(f"init:{exc}") from None
    section = config.get("model") or {}
    arch = section.get("arch", "ViT-B-16")
    load_plugins(config.get("plugins") or [])
    spec = dict(section.get("text_tower") or {"name": "open_clip"})
    tower = make_tower(spec.pop("name", "open_clip"), spec, field=f"init:{run_uri}: model.text_tower")
    seed = runs.init_seed(config.get("seed", 0), 0)
    return create_with_tower(arch, tower, section.get("init"), seed=seed), arch
