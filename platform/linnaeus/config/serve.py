"""The service's arguments (`args:` in serve/config.yaml): model, limits, batching, autoscaling.

`serve/app.py` validates them as `ServeArgs` before anything deploys; they may also come from a YAML file
(`config:`) with `set:` overrides, the same way every job's configuration does.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from linnaeus.config.base import Strict, apply_overrides, read_yaml, validate
from linnaeus.storage import S3Options


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
    # per client (its API key, else its address), per ingress replica; 0 turns a limit off (serve/clients.py)
    client_rate: float = Field(0, ge=0, description="requests per second per client; past it, 429")
    client_burst: int = Field(20, ge=1, description="requests a client may send at once before client_rate applies")
    client_concurrency: int = Field(0, ge=0, description="requests in flight per client; past it, 429")


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
    api_key_file: str | None = Field(None, description=(
        "file holding the API key (a mounted secret), re-read when it changes; wins over api_key_env"))
    bank_retry_s: float = Field(10.0, gt=0, description=(
        "with the label bank's store unreachable, the service starts degraded and retries this often"))
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


def load_serve_args(args: dict) -> ServeArgs:
    """`args:` of a Serve config as ServeArgs. `config: FILE` reads the fields from a YAML file first, the
    other keys override it section by section, and `set: [key.sub=value, ...]` overrides last, as every
    job's --set does."""
    raw = dict(args)
    path, overrides = raw.pop("config", None), raw.pop("set", None) or []
    if isinstance(overrides, str):
        overrides = [overrides]
    base = read_yaml(path) if path else {}
    return validate(ServeArgs, apply_overrides(_merged(base, raw), overrides),
                    f"serve args ({path})" if path else "serve args")


def _merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section (a `limits:` in args changes only the limits it names)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
