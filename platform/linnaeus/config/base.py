"""How a configuration is read: YAML files, dotted overrides, and errors that name the field.

Notable:
- Every model forbids unknown keys, so a typo in a recipe (`shufle_buffer: 10`) fails at load time with
  the field's dotted path, before any cluster work.
- Overrides are `key.sub=value` strings whose values are parsed as YAML (`true`, `3`, `[a, b]`), the
  same grammar as the recipe files.
- One error format for every job: `<where>: invalid configuration` and a line per field (`path: message
  (got value)`), raised as `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A recipe or override that does not validate; the message names the field and value."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def set_dotted(target: dict, dotted: str, value: Any) -> None:
    """target[a][b][c] = value for "a.b.c", creating sections as needed."""
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = target.setdefault(key, {})
        if isinstance(node, str):  # a part named by its key alone (`objective: clip`) grows fields
            node = target[key] = {"name": node}
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
        set_dotted(out, key.strip(), yaml.safe_load(text) if text.strip() else None)
    return out


def errors_text(exc: ValidationError) -> list[str]:
    """One `path: message (got value)` line per error."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{path}: {err['msg']}{shown}")
    return lines


def validate(model: type[M], raw: dict, where: str = "config") -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n  ".join([f"{where}: invalid configuration", *errors_text(exc)])) from None


def read_yaml(path: str | Path) -> dict:
    """A YAML file's mapping; a missing file, bad YAML or a non-mapping is a ConfigError naming the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    return raw


def load_yaml(model: type[M], path: str | Path, overrides: Sequence[str] = ()) -> M:
    """Load a YAML recipe into `model`, applying dotted overrides; fails naming file and field."""
    return validate(model, apply_overrides(read_yaml(path), overrides), str(path))
