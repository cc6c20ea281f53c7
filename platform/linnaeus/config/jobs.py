"""What the data, evaluation and batch jobs ask for: ingest, evaluate, label banks, bulk prediction.

Each is validated before any Ray work; `jobs/*.py` build them from `--config FILE`, their flags and
`--set key=value` (`linnaeus.config.cli`), with the same error format as training recipes.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, field_validator

from linnaeus.config.base import Strict
from linnaeus.images import DEFAULT_MAX_PIXELS
from linnaeus.storage import S3Options
from linnaeus.taxonomy import RankName, TextType


class InputFormat(str, Enum):
    FOLDER = "folder"
    CSV = "csv"
    WEBDATASET = "webdataset"


class IngestConfig(Strict):
    """What `jobs/ingest.py` asks for; validated before any Ray work."""

    input: str = Field(description="folder, CSV file, or tar folder/prefix (path or URI)")
    format: InputFormat
    output: str = Field(description="corpus folder or s3://bucket/prefix")
    resize: int | None = Field(default=None, ge=16, le=8192, description="resize the shorter side (never upsamples)")
    shard_rows: int | None = Field(default=None, ge=1, description="rows per shard (default: ~384 MB per shard)")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="refuse images with more pixels")
    s3: S3Options | None = None


EvalTask = Literal["zeroshot", "fewshot", "retrieval", "hierarchy"]


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
    rank: RankName = "species"
    shots: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)
    seeds: int = Field(5, ge=1)
    knn: int = Field(10, ge=1)
    hierarchy_images: int = Field(20_000, ge=2, description="sample size for the neighbour search")
    map_rank: RankName = "order"
    actors: int | None = Field(None, ge=1, description=(
        "model actors (default: 4 per GPU sharing it, 1 on a CPU-only cluster; CPU tasks decode)"))
    batch_size: int = Field(256, ge=1)
    s3: S3Options | None = None

    @field_validator("shots")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError(f"shots must be >= 1, got {v}")
        return v


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
    rank: RankName = "species"
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
