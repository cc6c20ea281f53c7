"""Which model to evaluate, as a string that travels to Ray actors instead of the weights.

    <uri>                 a model exported by training (folder or s3:// prefix with open_clip_config.json)
    init:<run-uri>        the exact weights a training run started from (its recipe's seed, or its
                          `model.init`): "trained vs its own initialisation" with nothing stored
    arch:<name>[@<init>]  an open_clip architecture, random (seed 0) or from a tag / checkpoint

Hub tags (`openai`, `hf-hub:`) need network access and fail fast without it (`linnaeus.models`).
"""

from __future__ import annotations

import json

import torch

from linnaeus import storage
from linnaeus.models import ModelLoadError, create_model, load_exported


def build_model(spec: str) -> tuple[torch.nn.Module, str]:
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
    from linnaeus.train.plan import CONFIG_NAME, init_seed

    record_loc = storage.resolve(run_uri).join(CONFIG_NAME)
    if not storage.exists(record_loc):
        raise ModelLoadError(f"init:{run_uri}: not a Linnaeus run folder ({CONFIG_NAME} is missing)")
    config = json.loads(storage.read_bytes(record_loc))["config"]
    section = config.get("model") or {}
    arch = section.get("arch", "ViT-B-16")
    return create_model(arch, section.get("init"), seed=init_seed(config.get("seed", 0), 0)), arch
