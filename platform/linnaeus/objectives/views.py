"""Extra views of each image that an objective asks the stream for (pydantic only: configs import it
without torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class View(BaseModel):
    """An extra random resized crop of every image, delivered as `view_<name>` [B, 3, size, size]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    size: int = Field(ge=16, le=1024)
    scale: tuple[float, float] = (0.9, 1.0)

    @field_validator("scale")
    @classmethod
    def _scale_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_crop_scale(v)


def check_crop_scale(v: tuple[float, float]) -> tuple[float, float]:
    """A RandomResizedCrop scale (low, high) of the image area: 0 < low <= high <= 1."""
    if not 0 < v[0] <= v[1] <= 1:
        raise ValueError(f"need 0 < low <= high <= 1, got {v}")
    return v
