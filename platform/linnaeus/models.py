"""open_clip models by name: the factory, initialisation from a checkpoint, and export in open_clip's format.

Notable:
- Any open_clip architecture works by name (ViT-B-16 is the default recipe), plus the project's small
  configs in `model_configs/` (`linnaeus-tiny` for tests and the demo), registered with open_clip.
- `init` is a pretrained tag (`openai`, ...) or `hf-hub:org/repo`, which need the network, or a
  checkpoint as a path or `s3://` URI. A hub download that fails (offline machines, firewalls) raises
  `ModelLoadError` saying what to do, not a traceback from deep inside a hub client.
- `export_model` writes what open_clip itself reads, so models leave the platform without it:
  `open_clip_config.json` (model and preprocess config) + `open_clip_pytorch_model.bin` (state dict).
  `open_clip.create_model_and_transforms(arch, pretrained=".../open_clip_pytorch_model.bin")` loads it
  for a built-in architecture, and `create_model_and_transforms("local-dir:<folder>")` for any.
- Nothing here knows about Ray.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch

from linnaeus import storage

CONFIG_DIR = Path(__file__).parent / "model_configs"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"


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
        return _load_file(arch, loc.path)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(loc.path).name
        local.write_bytes(storage.read_bytes(loc))
        return _load_file(arch, str(local))


def _load_file(arch: str, path: str) -> torch.nn.Module:
    try:
        return open_clip.create_model(arch, pretrained=path)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a checkpoint of {arch}: {str(exc)[:300]}") from None


def export_model(model: torch.nn.Module, arch: str, output: str,
                 s3: storage.S3Options | None = None) -> storage.Location:
    """Write `model` in open_clip's own layout under `output` (folder or s3:// prefix)."""
    out = storage.resolve(output, s3)
    storage.ensure_bucket(out)
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    config = {"model_cfg": model_config(arch), "preprocess_cfg": preprocess, "linnaeus_arch": arch}
    storage.write_bytes(out.join(CONFIG_NAME), json.dumps(config, indent=1).encode())
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    storage.write_bytes(out.join(WEIGHTS_NAME), buf.getvalue())
    return out


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


@dataclass(frozen=True)
class Export:
    """An exported model as stored: its architecture, its open_clip config and its weights' bytes."""

    uri: str
    arch: str
    config: dict
    weights: bytes

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the weights (16 hex digits): what label banks and caches are keyed by."""
        return hashlib.sha256(self.weights).hexdigest()[:16]

    def build(self) -> torch.nn.Module:
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / WEIGHTS_NAME
            weights.write_bytes(self.weights)
            return _load_file(self.arch, str(weights))


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
