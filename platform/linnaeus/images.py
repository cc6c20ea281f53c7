"""Encoded images: checked, decoded and normalised the same way at ingest, in the stream, in evaluation
and for clients of the service; what is kept, converted or refused, and why.

Notable:
- The pixel count is checked from the header, before any pixel is decoded, so a decompression bomb
  costs nothing (PIL's own bomb guard is replaced by our explicit limit and reason).
- Ingest (`clean_image`): a baseline RGB JPEG that needs no resize keeps its original bytes (no second
  lossy pass) unless it carries an ICC profile over 64 KB; everything else (CMYK, 16-bit, alpha,
  palette, grayscale, PNG/WebP/...) is converted to 8-bit RGB and re-encoded as JPEG, and the conversion
  is reported.
- Requests (`decode_image`): limits are checked in the cheapest order (bytes, then the pixel count from
  the header, then proportions, then the decode itself) and EXIF orientation is applied: phone photos
  arrive rotated in their pixels and upright in their tags.
- Every refusal raises `ImageRejected` with a short machine-readable reason (`empty`, `too_large`,
  `not_an_image`, `too_many_pixels`, `extreme_aspect_ratio`, `undecodable`) and a human detail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: far above any photo a 224-px model needs, far below a bomb
JPEG_QUALITY = 95
# An ICC profile is 0.5-4 KB in practice; a bigger one is dead weight in every shard (PIL does no colour
# management, so training and serving see the same pixels without it): re-encoded without it.
MAX_KEPT_ICC_BYTES = 64 * 1024
_EXIF_ORIENTATION = 0x0112

# Our own limit replaces PIL's; without this, PIL warns or raises on its own threshold first.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(ValueError):
    """An input image that cannot be ingested; `reason` is a short slug for reports."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class CleanImage:
    data: bytes  # JPEG bytes, 8-bit RGB
    width: int
    height: int
    converted: str | None  # what was changed ("cmyk->rgb", "resized", ...), None when kept as is


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB from any mode; alpha is composited on white (the usual page/paper background)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        hi = array.max() or 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        gray = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), f"{mode.lower()}->rgb"
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.mode == "RGBA":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode.lower()}->rgb"
    return img.convert("RGB"), f"{mode.lower()}->rgb"


def _resize_shorter(img: Image.Image, shorter: int) -> Image.Image:
    w, h = img.size
    scale = shorter / min(w, h)
    if scale >= 1.0:
        return img  # never upsample at ingest: the model's transform does that when it must
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def clean_image(data: bytes, resize: int | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> CleanImage:
    """Validate and normalise encoded image bytes; raises ImageRejected with the reason."""
    if not data:
        raise ImageRejected("empty", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except Exception as exc:  # PIL raises many types for non-images
        raise ImageRejected("not_an_image", f"{type(exc).__name__}: {exc}") from None
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels",
                            f"{width}x{height} = {width * height:,} pixels > limit {max_pixels:,}")
    fmt = img.format
    try:
        img.load()
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageRejected("undecodable", f"{type(exc).__name__}: {exc}") from None
    rotated = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
    rgb, converted = to_rgb(ImageOps.exif_transpose(img) if rotated else img)
    if rotated:
        converted = ",".join(filter(None, ["exif-rotated", converted]))
    resized = _resize_shorter(rgb, resize) if resize else rgb
    if resized is not rgb:
        converted = ",".join(filter(None, [converted, "resized"]))
    if len(img.info.get("icc_profile") or b"") > MAX_KEPT_ICC_BYTES:
        converted = ",".join(filter(None, [converted, "icc-dropped"]))
    if fmt == "JPEG" and converted is None:
        return CleanImage(data, width, height, None)
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=JPEG_QUALITY)
    if fmt != "JPEG":
        converted = ",".join(filter(None, [f"{(fmt or 'unknown').lower()}->jpeg", converted]))
    return CleanImage(out.getvalue(), resized.width, resized.height, converted)


def decode_rgb(data: bytes) -> Image.Image:
    """Decode stored (already cleaned) bytes for training; raises ImageRejected on corruption."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except Exception as exc:
        raise ImageRejected("undecodable", f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class ImageLimits:
    """What one image sent by a client may be."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    # The eval transform resizes the shorter side to the model's size: a 20 x 2,000,000 strip (tiny as
    # a PNG, under any pixel limit) would become 224 x 22,400,000 pixels.
    max_aspect_ratio: float = 20.0


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Encoded bytes from a client -> an upright 8-bit RGB PIL image, or ImageRejected saying why not."""
    if not data:
        raise ImageRejected("empty", "zero bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", f"{len(data):,} bytes > limit {limits.max_bytes:,}")
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
    except Exception as exc:  # PIL raises many types for non-images
        raise ImageRejected("not_an_image", f"{type(exc).__name__}: {exc}") from None
    if width * height > limits.max_pixels:
        raise ImageRejected("too_many_pixels",
                            f"{width}x{height} = {width * height:,} pixels > limit {limits.max_pixels:,}")
    if max(width, height) > limits.max_aspect_ratio * max(1, min(width, height)):
        raise ImageRejected("extreme_aspect_ratio",
                            f"{width}x{height}: sides differ more than {limits.max_aspect_ratio:g} times")
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: without a tag, the default copies the image
        return to_rgb(img)[0]  # alpha on white, 16-bit scaled, as at ingest
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageRejected("undecodable", f"{type(exc).__name__}: {exc}") from None
