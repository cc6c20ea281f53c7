"""Typed configuration: pydantic models, YAML recipes, and dotted command-line overrides.

Notable:
- Every model forbids unknown keys, so a typo in a recipe (`shufle_buffer: 10`) fails at load time with
  the field's dotted path, before any cluster work.
- Overrides are `key.sub=value` strings whose values are parsed as YAML (`true`, `3`, `[a, b]`), the
  same grammar as the recipe files.
- Library code receives these objects, never dicts or argparse namespaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from linnaeus.data.images import DEFAULT_MAX_PIXELS
from linnaeus.data.sources import InputFormat
from linnaeus.storage import S3Options
from linnaeus.taxonomy import ALL_TEXT_TYPES, Mixing, TextType

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A recipe or override that does not validate; the message names the field and value."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class StreamConfig(Strict):
    """How a corpus becomes training batches (the Ray Data stream)."""

    data: str = Field(description="corpus URI: a folder or s3://bucket/prefix holding _manifest.json")
    image_size: int = Field(224, ge=16, le=1024)
    model: str = Field("ViT-B-16", description="open_clip architecture whose tokenizer is used")
    context_length: int = Field(77, ge=8, le=1024)
    text_types: list[TextType] = Field(default_factory=lambda: list(ALL_TEXT_TYPES), min_length=1)
    mixing: Mixing = Mixing.PER_IMAGE
    seed: int = 0
    decode: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: decode + augment in Ray Data; gpu: ship JPEG bytes, decode on the trainer")
    crop_scale: tuple[float, float] = (0.9, 1.0)  # open_clip's default RandomResizedCrop scale
    shuffle_buffer: int = Field(2048, ge=0, description="rows mixed across row groups in each reader")
    preprocess_batch: int = Field(64, ge=1)
    preprocess_workers: int | None = Field(
        None, ge=1, description="preprocessing actors (default: one per CPU in the cluster, less one)")
    preprocess_cpus: float = Field(1.0, gt=0, description="CPUs each preprocessing actor reserves")
    s3: S3Options | None = None

    @field_validator("crop_scale")
    @classmethod
    def _scale_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"need 0 < low <= high <= 1, got {v}")
        return v


class IngestConfig(Strict):
    """What `jobs/ingest.py` asks for; validated before any Ray work."""

    input: str
    format: InputFormat
    output: str
    resize: int | None = Field(default=None, ge=16, le=8192)
    shard_rows: int | None = Field(default=None, ge=1)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    s3: S3Options | None = None


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = target.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        target = node
    target[keys[-1]] = value


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a raw config dict."""
    out = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        _set_dotted(out, key.strip(), yaml.safe_load(text) if text.strip() else None)
    return out


def _format(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid configuration"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {path}: {err['msg']}{shown}")
    return "\n".join(lines)


def validate(model: type[M], raw: dict, where: str = "config") -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc, where)) from None


def load_yaml(model: type[M], path: str | Path, overrides: Sequence[str] = ()) -> M:
    """Load a YAML recipe into `model`, applying dotted overrides; fails naming file and field."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    return validate(model, apply_overrides(raw, overrides), str(path))
