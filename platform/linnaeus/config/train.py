"""A training recipe (`TrainConfig`, `jobs/configs/*.yaml`): data, model, objective, optimiser, schedule,
scaling, checkpoints.

Notable:
- Parts are named by registry key: `objective` (default `clip`), `model.text_tower` (default
  `open_clip`), `data.text_source` (default `taxonomic`). `plugins` lists modules that define parts
  outside the package; they are imported before any key is checked.
- torch, open_clip and the registries are imported when a recipe is checked, not with this module: a
  job or a Ray worker that only reads an ingest or evaluation config never pays for them.
- The data section follows the recipe unless set: `data.model`, `data.image_size`, `data.text_tower`
  (hence the tokenizer and context length), `data.plugins` and `data.views` come from the model and the
  objective, and must agree with them when set; `data.cut_text` is on wherever the text tower allows it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from linnaeus.config.base import Strict
from linnaeus.config.parts import ObjectiveRef, TextTowerRef
from linnaeus.config.stream import StreamConfig
from linnaeus.registry import load_plugins
from linnaeus.storage import S3Options


class ModelSection(Strict):
    arch: str = Field("ViT-B-16", description="open_clip architecture, or a config in model_configs/")
    init: str | None = Field(None, description="openai | hf-hub:org/repo | checkpoint path | s3:// URI")
    text_tower: TextTowerRef = Field(default_factory=lambda: TextTowerRef(name="open_clip"),
                                     description="registered text tower (open_clip: the architecture's own)")
    grad_checkpointing: bool = False
    compile: bool = False
    compile_ddp: Literal["whole", "split"] = Field("whole", description=(
        "with compile and several workers: whole = one graph per pass, gradients all-reduced after the "
        "backward (measured faster on one host); split = graphs cut at DDP's buckets so the all-reduce "
        "overlaps the backward (torch's default; may suit slow links between nodes)"))
    fused_attention: bool = Field(True, description=(
        "self-attention as one QKV projection + scaled_dot_product_attention (same weights, same results; "
        "linnaeus.clip.fastclip)"))

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from linnaeus.clip.models import ModelLoadError, model_config

        try:
            model_config(v)
        except ModelLoadError as exc:
            raise ValueError(str(exc)) from None
        return v


class OptimSection(Strict):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.2, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    warmup_steps: int = Field(1000, ge=0)
    grad_clip_norm: float | None = Field(1.0, gt=0)


class ScheduleSection(Strict):
    """How much to train. global batch = batch_size x scaling.workers x accumulation."""

    batch_size: int = Field(256, ge=1, description="images per worker per micro-batch")
    accumulation: int = Field(1, ge=1, description="micro-batches per optimiser step")
    epochs: float = Field(1.0, gt=0)
    steps: int | None = Field(None, ge=1, description="optimiser steps; overrides epochs")
    precision: Literal["auto", "bf16", "fp32", "fp8", "fp8-rowwise"] = Field(
        "auto", description="auto: bf16 on GPU, fp32 on CPU; fp8*: FP8 MLP matmuls on Hopper (torchao)")
    log_every: int = Field(10, ge=1)


class ScalingSection(Strict):
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="fractions leave CPUs to Ray Data")
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray's placement of the workers: PACK fills a node first, STRICT_SPREAD puts "
                            "each on its own node")


class CheckpointSection(Strict):
    storage_path: str = Field("out/runs", description="folder or s3://bucket/prefix for runs")
    name: str | None = Field(None, description="run name (default: <recipe>-<UTC time>); reuse it to resume")
    every_steps: int = Field(500, ge=1)
    keep: int = Field(3, ge=1)
    max_failures: int = Field(3, ge=0, description="worker-group restarts from the latest checkpoint")


class FaultSection(Strict):
    """Chaos testing: kill one worker process once, when it reaches `kill_at_step`."""

    kill_at_step: int = Field(ge=1)
    rank: int = Field(0, ge=0)


class TrainConfig(Strict):
    """A training recipe. See the module docstring for how `data` follows the model and objective."""

    data: StreamConfig
    model: ModelSection = Field(default_factory=ModelSection)
    objective: ObjectiveRef = Field(default_factory=lambda: ObjectiveRef(name="clip"),
                                    description="registered training objective (clip: gathered contrastive)")
    optim: OptimSection = OptimSection()
    schedule: ScheduleSection = ScheduleSection()
    scaling: ScalingSection = ScalingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    export: str | None = Field(None, description="where the final model goes (default: <run>/export)")
    seed: int = 0
    plugins: list[str] = Field(default_factory=list, description=(
        "modules to import before the recipe's part keys are checked (parts defined outside linnaeus)"))
    s3: S3Options | None = Field(None, description="for storage_path, export and (unless data.s3) data")
    faults: FaultSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _data_follows_recipe(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        load_plugins(raw.get("plugins") or [])
        if not isinstance(raw.get("data"), dict):
            return raw
        derived = _derived(raw)
        if derived is None:  # a bad arch or part: its own field's validation says what is wrong
            return raw
        data = {**derived, **raw["data"]}
        if raw.get("s3") is not None:
            data.setdefault("s3", raw["s3"])
        return {**raw, "data": data}

    @model_validator(mode="after")
    def _agree(self) -> "TrainConfig":
        from linnaeus.clip import float8
        from linnaeus.clip.models import model_config
        from linnaeus.clip.text_towers import make_tower
        from linnaeus.objectives import OBJECTIVES

        tower = make_tower(self.model.text_tower.name, self.model.text_tower.params)
        from_model = {"model": self.model.arch, "image_size": _image_size(model_config(self.model.arch)["vision_cfg"]),
                      "context_length": tower.context_length(self.model.arch), "text_tower": self.model.text_tower}
        from_recipe = {"views": list(OBJECTIVES.get(self.objective.name).views(self.objective.params)),
                       "plugins": self.plugins}
        for key, value in {**from_model, **from_recipe}.items():
            if getattr(self.data, key) != value:
                source = (f"model.arch {self.model.arch!r}" if key in from_model else
                          f"the recipe (objective {self.objective.name!r}, plugins)")
                raise ValueError(f"data.{key}={_shown(getattr(self.data, key))} does not match {source}, which "
                                 f"needs {_shown(value)} (leave it unset)")
        if self.schedule.precision.startswith("fp8"):
            if not self.scaling.use_gpu:
                raise ValueError(f"schedule.precision={self.schedule.precision} needs GPUs (scaling.use_gpu: true)")
            if not float8.available():
                raise ValueError(f"schedule.precision={self.schedule.precision} needs torchao: "
                                 "pip install 'linnaeus[fp8]'")
        if self.faults and self.faults.rank >= self.scaling.workers:
            raise ValueError(f"faults.rank={self.faults.rank} but there are {self.scaling.workers} workers")
        return self

    @property
    def global_batch(self) -> int:
        return self.schedule.batch_size * self.scaling.workers * self.schedule.accumulation


def _derived(raw: dict) -> dict | None:
    """What the data section takes from the recipe's model and objective, or None if they do not resolve."""
    from linnaeus.clip.models import ModelLoadError, model_config
    from linnaeus.clip.text_towers import make_tower
    from linnaeus.objectives import OBJECTIVES

    model = raw.get("model") or {}
    arch = model.get("arch", "ViT-B-16")
    try:
        cfg = model_config(arch)
        tower_ref = TextTowerRef.model_validate(model.get("text_tower", "open_clip"))
        objective_ref = ObjectiveRef.model_validate(raw.get("objective", "clip"))
    except (ModelLoadError, ValidationError, ValueError):
        return None
    tower = make_tower(tower_ref.name, tower_ref.params)
    views = OBJECTIVES.get(objective_ref.name).views(objective_ref.params)
    return {"model": arch, "image_size": _image_size(cfg["vision_cfg"]), "text_tower": tower_ref.model_dump(),
            "cut_text": tower.cut_text_problem(arch) is None, "plugins": list(raw.get("plugins") or []),
            "views": [v.model_dump() for v in views]}


def _image_size(vision_cfg: dict) -> int:
    size = vision_cfg.get("image_size", 224)
    return size if isinstance(size, int) else size[0]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return repr([v.model_dump() if hasattr(v, "model_dump") else v for v in value])
    return repr(value.model_dump() if hasattr(value, "model_dump") else value)
