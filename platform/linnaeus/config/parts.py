"""Recipe fields that name a registered part: `objective: clip`, or `model.text_tower: {name: hf, ...}`.

Notable:
- A part is named by its registry key alone, or by a mapping of `name` plus the part's own fields
  (`objective: {name: dino, momentum: 0.996}`), flat so that `--set objective.momentum=0.99` works.
- The key is checked against the registry and the fields against the part's `Params` when the recipe
  is loaded: an unknown key fails naming the field and the known keys.
- Saved back (`model_dump`), a part is the same flat mapping, so a run's recipe reads back as written.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError, model_serializer, model_validator

from linnaeus.config.base import Strict, errors_text
from linnaeus.registry import Registry, params_model


class PartRef(Strict):
    name: str
    params: Any = None  # the part's Params, validated

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"name": raw}
        if isinstance(raw, dict) and set(raw) - {"name", "params"}:
            return {"name": raw.get("name"), "params": {k: v for k, v in raw.items() if k != "name"}}
        return raw

    @staticmethod
    def registry() -> Registry:
        raise NotImplementedError

    @model_validator(mode="after")
    def _resolve(self) -> "PartRef":
        part = self.registry().get(self.name)
        if not isinstance(self.params, BaseModel) or type(self.params) is not params_model(part):
            raw = self.params.model_dump() if isinstance(self.params, BaseModel) else (self.params or {})
            try:
                self.params = params_model(part).model_validate(raw)
            except ValidationError as exc:
                raise ValueError(f"{self.registry().kind} {self.name!r}: " + "; ".join(errors_text(exc))) from None
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> dict:
        return {"name": self.name, **self.params.model_dump(mode="json")}


# The registries are imported when a reference is checked, not with the config package: they bring torch.
class ObjectiveRef(PartRef):
    @staticmethod
    def registry() -> Registry:
        from linnaeus.objectives import OBJECTIVES

        return OBJECTIVES


class TextTowerRef(PartRef):
    @staticmethod
    def registry() -> Registry:
        from linnaeus.clip.text_towers import TEXT_TOWERS

        return TEXT_TOWERS
