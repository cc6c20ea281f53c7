"""How a corpus becomes training batches (`StreamConfig`, the Ray Data stream's settings).

Notable:
- The caption of each image comes from a registered text source (`text_source`, BioCLIP's `taxonomic`
  by default) in the kinds it offers (`text_types`, all of them by default), tokenised by the model's
  text tower (`model` + `text_tower`), whose context length applies unless set.
- `views` are extra random resized crops of every image that an objective asks for.
- In a training recipe the model, image size, text tower, plugins and views follow the recipe's model
  and objective (`TrainConfig`); standalone (previews, benchmarks) they are set here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from linnaeus.config.base import Strict
from linnaeus.config.parts import TextTowerRef
from linnaeus.objectives.views import View, check_crop_scale
from linnaeus.registry import load_plugins
from linnaeus.storage import S3Options
from linnaeus.text import Mixing, make_source


class StreamConfig(Strict):
    """How a corpus becomes training batches (the Ray Data stream)."""

    data: str = Field(description="corpus URI: a folder or s3://bucket/prefix holding _manifest.json")
    image_size: int = Field(224, ge=16, le=1024)
    model: str = Field("ViT-B-16", description="open_clip architecture whose text tower tokenises")
    text_tower: TextTowerRef = Field(default_factory=lambda: TextTowerRef(name="open_clip"))
    context_length: int = Field(77, ge=8, le=1024, description="default: the text tower's")
    text_source: str = Field("taxonomic", description="registered text source the captions come from")
    text_types: list[str] | None = Field(None, min_length=1, description=(
        "caption kinds drawn from (default: all the source offers; taxonomic: taxonomic, scientific, common, "
        "scientific_common, taxonomic_common)"))
    mixing: Mixing = Mixing.PER_IMAGE
    seed: int = 0
    decode: Literal["cpu", "gpu", "hybrid"] = Field(
        "cpu", description="cpu: decode + augment in Ray Data; gpu: ship JPEG bytes, decode (nvJPEG) and "
                           "augment on the trainer; hybrid: decode in Ray Data, augment on the trainer")
    crop_scale: tuple[float, float] = (0.9, 1.0)  # open_clip's default RandomResizedCrop scale
    views: list[View] = Field(default_factory=list, description="extra crops of every image (`view_<name>`)")
    shuffle_buffer: int = Field(2048, ge=0, description="rows mixed across row groups in each reader")
    preprocess_batch: int = Field(64, ge=1)
    preprocess_workers: int | None = Field(
        None, ge=1, description="preprocessing actors (default: one per CPU in the cluster, less one)")
    preprocess_cpus: float = Field(1.0, gt=0, description="CPUs each preprocessing actor reserves")
    cut_text: bool = Field(False, description=(
        "cut each batch's token ids after its longest caption (rounded up to 16): exact for causal text "
        "towers pooled at the end-of-text token; in a training recipe the default is on where the model allows"))
    plugins: list[str] = Field(default_factory=list, description="modules defining parts this stream names")
    s3: S3Options | None = None

    @model_validator(mode="before")
    @classmethod
    def _plugins_first(cls, raw):
        if isinstance(raw, dict):
            load_plugins(raw.get("plugins") or [])
        return raw

    @field_validator("crop_scale")
    @classmethod
    def _scale_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_crop_scale(v)

    @field_validator("views")
    @classmethod
    def _distinct_views(cls, v: list[View]) -> list[View]:
        names = [view.name for view in v]
        if len(set(names)) != len(names):
            raise ValueError(f"view names must differ, got {names}")
        return v

    @field_validator("text_source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        make_source(v)
        return v

    @field_validator("text_types")
    @classmethod
    def _kinds_of_the_source(cls, v: list[str] | None, info: ValidationInfo) -> list[str]:
        if "text_source" not in info.data:  # its own error is reported
            return v
        source = make_source(info.data["text_source"])
        return list(source.check_kinds([str(getattr(k, "value", k)) for k in v] if v else source.kinds))

    @field_validator("cut_text")
    @classmethod
    def _tower_takes_cut_text(cls, v: bool, info: ValidationInfo) -> bool:
        if v and "model" in info.data and "text_tower" in info.data:
            tower = info.data["text_tower"]
            problem = _tower(tower.name, tower.params).cut_text_problem(info.data["model"])
            if problem:
                raise ValueError(f"{info.data['model']} cannot take cut text: {problem} (set data.cut_text: false)")
        return v

    @model_validator(mode="after")
    def _tower_context(self) -> "StreamConfig":
        if "context_length" not in self.model_fields_set:
            self.context_length = _tower(self.text_tower.name, self.text_tower.params).context_length(self.model)
        return self


def _tower(name: str, params):
    from linnaeus.clip.text_towers import make_tower  # torch: loaded when a recipe is checked, not on import

    return make_tower(name, params)
