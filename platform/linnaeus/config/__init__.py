"""Typed configuration: pydantic models loaded from YAML with dotted `--set` overrides.

`base` reads and validates (one error format), `parts` names registered parts, `stream` and `train` are
training recipes, `jobs` the data, evaluation and batch jobs, `serve` the service's arguments, and `cli`
the `--config` / flags / `--set` front every job shares. Library code gets these objects, never dicts or
argparse namespaces. This package imports only the floor beneath it (taxonomy, storage, images, the
registries and the model floor), never the data plane, training, evaluation or serving.
"""

from linnaeus.config.base import ConfigError, Strict, apply_overrides, load_yaml, read_yaml, validate
from linnaeus.config.jobs import EvalConfig, EvalTask, IngestConfig, InputFormat, LabelBankConfig, PredictConfig
from linnaeus.config.parts import ObjectiveRef, PartRef, TextTowerRef
from linnaeus.config.serve import AutoscalingSection, BatchingConfig, ServeArgs, ServeLimits, load_serve_args
from linnaeus.config.stream import StreamConfig
from linnaeus.config.train import (
                                   CheckpointSection,
                                   FaultSection,
                                   ModelSection,
                                   OptimSection,
                                   ScalingSection,
                                   ScheduleSection,
                                   TrainConfig,
)

__all__ = [
    "AutoscalingSection", "BatchingConfig", "CheckpointSection", "ConfigError", "EvalConfig", "EvalTask",
    "FaultSection", "IngestConfig", "InputFormat", "LabelBankConfig", "ModelSection", "ObjectiveRef",
    "OptimSection", "PartRef", "PredictConfig", "ScalingSection", "ScheduleSection", "ServeArgs", "ServeLimits",
    "StreamConfig", "Strict", "TextTowerRef", "TrainConfig", "apply_overrides", "load_serve_args", "load_yaml",
    "read_yaml", "validate",
]
