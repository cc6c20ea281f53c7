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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    decode: Literal["cpu", "gpu", "hybrid"] = Field(
        "cpu", description="cpu: decode + augment in Ray Data; gpu: ship JPEG bytes, decode (nvJPEG) and "
                           "augment on the trainer; hybrid: decode in Ray Data, augment on the trainer")
    crop_scale: tuple[float, float] = (0.9, 1.0)  # open_clip's default RandomResizedCrop scale
    shuffle_buffer: int = Field(2048, ge=0, description="rows mixed across row groups in each reader")
    preprocess_batch: int = Field(64, ge=1)
    preprocess_workers: int | None = Field(
        None, ge=1, description="preprocessing actors (default: one per CPU in the cluster, less one)")
    preprocess_cpus: float = Field(1.0, gt=0, description="CPUs each preprocessing actor reserves")
    cut_text: bool = Field(False, description=(
        "cut each batch's token ids after its longest caption (rounded up to 16): exact for causal text "
        "towers pooled at the end-of-text token; in a training recipe the default is on where the model allows"))
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


class ModelSection(Strict):
    arch: str = Field("ViT-B-16", description="open_clip architecture, or a config in model_configs/")
    init: str | None = Field(None, description="openai | hf-hub:org/repo | checkpoint path | s3:// URI")
    grad_checkpointing: bool = False
    compile: bool = False
    compile_ddp: Literal["whole", "split"] = Field("whole", description=(
        "with compile and several workers: whole = one graph per pass, gradients all-reduced after the "
        "backward (measured faster on one host); split = graphs cut at DDP's buckets so the all-reduce "
        "overlaps the backward (torch's default; may suit slow links between nodes)"))
    fused_attention: bool = Field(True, description=(
        "self-attention as one QKV projection + scaled_dot_product_attention (same weights, same results; "
        "linnaeus.fastclip)"))


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
    """A training recipe (`jobs/configs/*.yaml`). `data.model`, `data.image_size` and
    `data.context_length` follow `model.arch` unless set, and must agree with it."""

    data: StreamConfig
    model: ModelSection = ModelSection()
    optim: OptimSection = OptimSection()
    schedule: ScheduleSection = ScheduleSection()
    scaling: ScalingSection = ScalingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    export: str | None = Field(None, description="where the final model goes (default: <run>/export)")
    seed: int = 0
    s3: S3Options | None = Field(None, description="for storage_path, export and (unless data.s3) data")
    faults: FaultSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _data_follows_model(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            return raw
        from linnaeus.models import ModelLoadError, model_config

        arch = (raw.get("model") or {}).get("arch", "ViT-B-16")
        try:
            cfg = model_config(arch)
        except ModelLoadError as exc:
            raise ValueError(f"model.arch: {exc}") from None
        from linnaeus.fastclip import cut_text_problem

        data = {"model": arch, "image_size": _image_size(cfg["vision_cfg"]),
                "context_length": cfg["text_cfg"].get("context_length", 77),
                "cut_text": cut_text_problem(cfg) is None, **raw["data"]}
        if raw.get("s3") is not None:
            data.setdefault("s3", raw["s3"])
        return {**raw, "data": data}

    @model_validator(mode="after")
    def _agree(self) -> "TrainConfig":
        from linnaeus.models import model_config

        cfg = model_config(self.model.arch)
        want = {"model": self.model.arch, "image_size": _image_size(cfg["vision_cfg"]),
                "context_length": cfg["text_cfg"].get("context_length", 77)}
        for key, value in want.items():
            if getattr(self.data, key) != value:
                raise ValueError(f"data.{key}={getattr(self.data, key)!r} does not match model.arch "
                                 f"{self.model.arch!r}, which needs {value!r} (leave it unset)")
        if self.data.cut_text:
            from linnaeus.fastclip import cut_text_problem

            problem = cut_text_problem(cfg)
            if problem:
                raise ValueError(f"data.cut_text: {self.model.arch} cannot take cut text: {problem} "
                                 "(set data.cut_text: false)")
        if self.schedule.precision.startswith("fp8"):
            from linnaeus.train import float8

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


def _image_size(vision_cfg: dict) -> int:
    size = vision_cfg.get("image_size", 224)
    return size if isinstance(size, int) else size[0]


EvalTask = Literal["zeroshot", "fewshot", "retrieval", "hierarchy"]
Rank = Literal["kingdom", "phylum", "class", "order", "family", "genus", "species"]


class EvalConfig(Strict):
    """What `jobs/evaluate.py` measures; validated before any Ray work."""

    model: str = Field(description="exported model URI, init:<run-uri> or arch:<name>[@<init>]")
    data: str = Field(description="corpus URI (_manifest.json) or folder dataset (taxa.csv + images/)")
    output: str
    compare: str | None = Field(None, description="a second model, reported side by side")
    tasks: list[EvalTask] = Field(default_factory=lambda: ["zeroshot", "fewshot", "retrieval", "hierarchy"],
                                  min_length=1)
    text_type: TextType = TextType.TAXONOMIC_COMMON
    compare_text_type: TextType | None = Field(None, description="a second text type, reported side by side")
    templates: Literal["openai", "single"] = "openai"
    rank: Rank = "species"
    shots: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)
    seeds: int = Field(5, ge=1)
    knn: int = Field(10, ge=1)
    hierarchy_images: int = Field(20_000, ge=2, description="sample size for the neighbour search")
    map_rank: Rank = "order"
    actors: int | None = Field(
        None, ge=1, description="model actors (default: 4 per GPU sharing it, 1 on a CPU-only cluster; CPU tasks decode)")
    batch_size: int = Field(256, ge=1)
    s3: S3Options | None = None

    @field_validator("shots")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError(f"shots must be >= 1, got {v}")
        return v


class ServeLimits(Strict):
    """What one request may carry; anything past a limit is a 4xx naming it."""

    max_body_bytes: int = Field(64 * 2**20, ge=1024)
    max_image_bytes: int = Field(10 * 2**20, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="checked from the header, before decoding")
    max_images: int = Field(64, ge=1, description="images per request")
    max_labels: int = Field(1000, ge=1, description="labels (classify) or subset names (taxonomy)")
    max_texts: int = Field(256, ge=1, description="texts per embed request")
    max_text_chars: int = Field(300, ge=1, description="characters per label or text")
    max_k: int = Field(100, ge=1)


class BatchingConfig(Strict):
    """The model deployment's `user_config`: changed live with `serve deploy`, no restart."""

    max_batch_size: int = Field(128, ge=1)
    # 0: a batch is whatever queued while the previous one ran (measured best on the H100, benchmarks.md)
    batch_wait_timeout_s: float = Field(0.0, ge=0)


class AutoscalingSection(Strict):
    """Ray Serve's `autoscaling_config` fields that matter here (a `deployments:` entry may override)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    upscale_delay_s: float = Field(3, ge=0)
    downscale_delay_s: float = Field(60, ge=0)
    metrics_interval_s: float = Field(10, gt=0, description="how often replicas report their load")
    look_back_period_s: float = Field(30, gt=0, description="the window the load is averaged over")

    @model_validator(mode="after")
    def _order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class ServeArgs(Strict):
    """The service's application arguments (`args:` in serve/config.yaml)."""

    model: str = Field(description="exported model: a folder or s3:// prefix")
    bank: str | None = Field(None, description="label bank URI; default <model>/label_bank when present")
    api_key_env: str | None = Field("LINNAEUS_API_KEY", description=(
        "environment variable holding the API key; auth is on when it is set and non-empty"))
    cache_size: int = Field(100_000, ge=1, description="label embeddings kept per model replica")
    cuda_graphs: int = Field(256, ge=0, description="on GPUs, replay the image tower from CUDA graphs "
                                                    "for batches up to this size (0: eager PyTorch)")
    model_gpus: float | None = Field(None, ge=0, description="GPUs per model replica; default 1 if the "
                                                              "cluster has GPUs, else 0")
    model_cpus: float = Field(1.0, ge=0)
    ingress_cpus: float = Field(1.0, ge=0)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig())
    model_autoscaling: AutoscalingSection = Field(default_factory=lambda: AutoscalingSection())
    ingress_autoscaling: AutoscalingSection = Field(default_factory=lambda: AutoscalingSection(max_replicas=4))
    s3: S3Options | None = None


class LabelBankConfig(Strict):
    """`jobs/build_label_bank.py`: which taxa, embedded how, written where."""

    model: str = Field(description="exported model (folder or s3:// prefix)")
    taxa: list[str] = Field(min_length=1, description="corpora, folder datasets or taxa CSVs")
    output: str | None = Field(None, description="default: <model>/label_bank")
    text_types: list[TextType] = Field(default_factory=lambda: [TextType.TAXONOMIC_COMMON], min_length=1)
    templates: Literal["openai", "single", "none"] = "openai"
    actors: int = Field(1, ge=1)
    s3: S3Options | None = None


class PredictConfig(Strict):
    """`jobs/predict.py`: top-k taxa (or free-text labels) for every image under a folder or bucket."""

    model: str
    input: str = Field(description="folder or s3:// prefix of images, read recursively")
    output: str = Field(description="folder or s3:// prefix for the predictions")
    rank: Rank = "species"
    k: int = Field(5, ge=1, le=100)
    labels: list[str] | None = Field(None, description="free-text labels instead of the label bank")
    templates: Literal["openai", "single", "none"] = "openai"
    subset: list[str] | None = None
    bank: str | None = None
    format: Literal["parquet", "csv"] = "parquet"
    actors: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
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
