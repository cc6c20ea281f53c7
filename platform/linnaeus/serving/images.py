"""Images that clients send: size and pixel limits, checked before decoding, and decoding to RGB.

Notable:
- Limits are checked in the cheapest order: bytes first, then the pixel count from the header (a
  decompression bomb is refused before a single pixel is decoded), then the decode itself.
- EXIF orientation is applied: phone photos arrive rotated in their pixels and upright in their tags.
- Every refusal is an `ImageRejected` with a short reason (`too_large`, `too_many_pixels`,
  `extreme_aspect_ratio`, `not_an_image`, `undecodable`, `empty`) that the service turns into a 4xx naming the image's index.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from linnaeus.data.images import ImageRejected, to_rgb

__all__ = ["ImageLimits", "ImageRejected", "decode_image"]


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    # The eval transform resizes the shorter side to the model's size: a 20 x 2,000,000 strip (tiny as
    # a PNG, under any pixel limit) would become 224 x 22,400,000 pixels.
    max_aspect_ratio: float = 20.0


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Encoded bytes -> an upright 8-bit RGB PIL image, or ImageRejected saying why not."""
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
