"""Registries of the parts a recipe names by key: objectives, text towers, text sources.

Notable:
- A registry maps a key to a part class; `@REGISTRY.register("key")` adds one. Registering a key twice
  with a different class is an error: the module imported last would win without a word.
- `get(key, field)` fails naming the recipe field and the known keys, so a recipe with an unknown part
  fails when it is loaded, before any cluster work.
- A part class may declare `Params`, the pydantic model of its own recipe fields (`objective: {name: dino,
  momentum: 0.996}` validates `momentum` against the dino objective's Params); without one it takes none.
- Parts defined outside the package (a lab's own objective) live in modules that register them when
  imported. A recipe lists those modules under `plugins:`; `load_plugins` imports them (once per
  process) wherever a key is resolved: the driver that validates the recipe, the train workers, the
  stream's actors, and whoever builds a model from an export that names them.
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class NoParams(BaseModel):
    """The Params of a part that takes none: any field given is an error naming it."""

    model_config = ConfigDict(extra="forbid")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, key: str):
        """Class decorator: make the class known as `key` (and set its `key` attribute)."""
        def add(cls: type[T]) -> type[T]:
            known = self._entries.get(key)
            if known is not None and _qualname(known) != _qualname(cls):
                raise ValueError(f"{self.kind} {key!r} is already registered by {_qualname(known)}")
            cls.key = key
            self._entries[key] = cls
            return cls
        return add

    def get(self, key: str, field: str | None = None) -> type[T]:
        try:
            return self._entries[key]
        except KeyError:
            where = f"{field}: " if field else ""
            raise ValueError(f"{where}unknown {self.kind} {key!r}; known: {', '.join(self.keys())} (a part "
                             "defined in your own module is found once the recipe lists it under plugins:)"
                             ) from None

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


def params_model(cls: type) -> type[BaseModel]:
    return getattr(cls, "Params", NoParams)


def load_plugins(modules: Iterable[str]) -> None:
    """Import the modules that register plugin parts; a module that cannot be imported is an error
    naming it (the import system caches modules, so this is cheap after the first call)."""
    if isinstance(modules, str):
        raise ValueError(f"plugins: a list of module names, got the string {modules!r} (write [{modules}])")
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an ImportError, or whatever the plugin's own import raised
            raise ValueError(f"plugins: cannot import {name!r} ({type(exc).__name__}: {exc})") from None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
