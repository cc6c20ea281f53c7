"""open_clip models by name: the factory, its tokenizers, and initialisation from a checkpoint.

Notable:
- Any open_clip architecture works by name (ViT-B-16 is the default recipe), plus the project's small
  configs in `model_configs/` (`linnaeus-tiny` for tests and the demo), registered with open_clip.
- `init` is a pretrained tag (`openai`, ...) or `hf-hub:org/repo`, which need the network, or a
  checkpoint as a path or `s3://` URI. A hub download that fails (offline machines, firewalls) raises
  `ModelLoadError` saying what to do, not a traceback from deep inside a hub client.
- Nothing here knows about Ray; exports (open_clip's own layout) are `linnaeus.clip.exports`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch

from linnaeus import storage

CONFIG_DIR = Path(__file__).parent / "model_configs"


class ModelLoadError(RuntimeError):
    """A model that cannot be built or initialised; the message says why and what to do."""


@functools.cache
def register_configs() -> None:
    """Make the project's own architectures known to open_clip (once per process)."""
    open_clip.add_model_config(CONFIG_DIR)


@functools.lru_cache(maxsize=4)
def tokenizer(arch: str, context_length: int | None = None):
    """open_clip's tokenizer for `arch` (cached per process; knows the project's own architectures)."""
    register_configs()
    return open_clip.get_tokenizer(arch, context_length=context_length)


def model_config(arch: str) -> dict:
    register_configs()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelLoadError(f"unknown open_clip architecture {arch!r} (e.g. ViT-B-16, ViT-L-14, "
                             f"linnaeus-tiny; open_clip.list_models() lists them all)")
    return cfg


@contextlib.contextmanager
def _quiet_root_warnings():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _hub_unreachable() -> str | None:
    """Why the model hub cannot be reached, or None. A 3 s probe: offline, hub clients retry for ~45 s
    before failing. Skipped with HF_HUB_OFFLINE=1, where weights may come from the local cache."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=3).close()
    except OSError as exc:
        return f"{endpoint.hostname}:{port} is unreachable ({exc})"
    return None


def _from_hub(arch: str, init: str) -> torch.nn.Module:
    unreachable = _hub_unreachable()
    if unreachable:
        raise ModelLoadError(
            f"{arch}: cannot fetch pretrained weights {init!r}: the model hub {unreachable}. On a machine "
            "without network access, download the weights where there is and pass them as a path or "
            "s3:// URI.")
    try:
        if init.startswith("hf-hub:"):
            return open_clip.create_model(init)
        return open_clip.create_model(arch, pretrained=init)
    except Exception as exc:  # hub clients raise many types when offline
        raise ModelLoadError(
            f"{arch}: cannot fetch pretrained weights {init!r} from the model hub "
            f"({type(exc).__name__}: {str(exc)[:200]}). If this machine has no network access, "
            "download the weights where there is and pass them as a path or s3:// URI.") from None


def create_model(arch: str = "ViT-B-16", init: str | None = None,
                 s3: storage.S3Options | None = None, seed: int | None = None) -> torch.nn.Module:
    """An open_clip CLIP model, randomly initialised (from `seed` when given) or from `init`."""
    model_config(arch)
    if seed is not None:
        torch.manual_seed(seed)
    if init is None:
        with _quiet_root_warnings():  # open_clip warns that no weights were loaded: that is the request
            return open_clip.create_model(arch, pretrained=None)
    if init.startswith("hf-hub:") or open_clip.is_pretrained_cfg(arch, init):
        return _from_hub(arch, init)
    loc = storage.resolve(init, s3)
    if not loc.is_s3:
        if not os.path.isfile(loc.path):
            raise ModelLoadError(f"{init}: no such checkpoint file (nor a pretrained tag of {arch}: "
                                 f"{open_clip.list_pretrained_tags_by_model(arch)})")
        return load_weights(arch, loc.path)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(loc.path).name
        local.write_bytes(storage.read_bytes(loc))
        return load_weights(arch, str(local))


def load_weights(arch: str, path: str) -> torch.nn.Module:
    """An open_clip model of `arch` with the state dict stored at `path` (strict: every key must match)."""
    try:
        return open_clip.create_model(arch, pretrained=path)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a checkpoint of {arch}: {str(exc)[:300]}") from None


def check_init(arch: str, init: str | None, s3: storage.S3Options | None = None, strict: bool = False) -> str:
    """Say where `init` would come from without fetching it; raise ModelLoadError if it cannot exist
    (and, with `strict`, if it is a hub download and the hub cannot be reached)."""
    model_config(arch)
    if init is None:
        return "random initialisation"
    if init.startswith("hf-hub:") or open_clip.is_pretrained_cfg(arch, init):
        unreachable = _hub_unreachable()
        if unreachable and strict:
            raise ModelLoadError(f"{arch}: model.init={init!r} needs the model hub, and {unreachable}. On a "
                                 "machine without network access, download the weights where there is and "
                                 "pass them as a path or s3:// URI.")
        return (f"pretrained {init!r}, fetched from the model hub by every worker at start "
                f"({'hub ' + unreachable + ': this run would fail here' if unreachable else 'hub reachable'})")
    loc = storage.resolve(init, s3)
    if not storage.exists(loc):
        raise ModelLoadError(f"{init}: no such checkpoint (nor a pretrained tag of {arch}: "
                             f"{open_clip.list_pretrained_tags_by_model(arch)})")
    return f"checkpoint {loc.uri}"
