"""Hostile images, made here (nothing downloaded), and what every path must do with each: the rows of the
table in docs/reliability.md ("Hostile images"), which tests/ray/test_hostile_images.py and the HTTP test
in tests/ray/test_serve.py hold to it.

Outcomes: `kept` (as is), `converted` (to 8-bit RGB, upright), `skipped:<reason>` (counted and reported
with the file's name, the run goes on), `4xx:<reason>` (HTTP)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

BOMB_SIDE = 10_000  # 100 megapixels in a file of a few kilobytes


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3) + rng.integers(0, 30, (h, w, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb() -> bytes:
    """A valid 10,000 x 10,000 grayscale PNG of zeros: ~100 KB on disk, 100 MB once decoded."""
    row = b"\x00" + b"\x00" * BOMB_SIDE
    pixels = zlib.compress(row * BOMB_SIDE, 9)
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored 64 wide, shown 48 wide
    return _encode(_photo(64, 48), "JPEG", exif=exif.tobytes())


def _huge_icc() -> bytes:
    # 150 KB of profile in front of 3 KB of pixels (typical profiles are 0.5-4 KB; PIL does no colour
    # management, so the pixels decode the same with or without it). Past max_image_bytes it is a 413.
    profile = np.random.default_rng(1).integers(0, 255, 150_000, dtype=np.uint8).tobytes()
    return _encode(_photo(), "JPEG", quality=90, icc_profile=profile)


def hostile_images() -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes)."""
    good = _encode(_photo(), "JPEG", quality=90)
    sixteen = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)  # mode I;16
    rgba = _photo().convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1)), "L"))
    return {
        "truncated JPEG": ("truncated.jpg", _encode(_photo(200, 200), "JPEG", quality=95)[:2000]),
        "zero bytes": ("empty.jpg", b""),
        "text named .png": ("notes.png", b"field notes: 3 herons at the lake, 2 egrets\n" * 20),
        "CMYK JPEG": ("cmyk.jpg", _encode(_photo().convert("CMYK"), "JPEG")),
        "16-bit grayscale PNG": ("gray16.png", _encode(sixteen, "PNG")),
        "RGBA PNG (alpha)": ("alpha.png", _encode(rgba, "PNG")),
        "palette GIF": ("palette.gif", _encode(_photo().convert("P", palette=Image.Palette.ADAPTIVE), "GIF")),
        "EXIF-rotated JPEG": ("rotated.jpg", _exif_rotated()),
        "100-megapixel bomb": ("bomb.png", _bomb()),
        "JPEG with a 150 KB ICC profile": ("icc.jpg", _huge_icc()),
        "plain JPEG (control)": ("good.jpg", good),
    }


# What each path does with each image (docs/reliability.md's table, column by column): ingest keeps,
# converts or skips; evaluation and bulk prediction (which read files as they are) answer or skip; the
# HTTP API answers 200 or refuses.
EXPECTED = {
    #  name:                           (ingest,                   evaluate and predict,      HTTP)
    "truncated JPEG":                 ("skipped:undecodable",     "skipped:undecodable",     "400:undecodable"),
    "zero bytes":                     ("skipped:empty",           "skipped:empty",           "400:empty"),
    "text named .png":                ("skipped:not_an_image",    "skipped:not_an_image",    "400:not_an_image"),
    "CMYK JPEG":                      ("converted",               "answered",                "200"),
    "16-bit grayscale PNG":           ("converted",               "answered",                "200"),
    "RGBA PNG (alpha)":               ("converted",               "answered",                "200"),
    "palette GIF":                    ("converted",               "answered",                "200"),
    "EXIF-rotated JPEG":              ("converted",               "answered",                "200"),
    "100-megapixel bomb":             ("skipped:too_many_pixels", "skipped:too_many_pixels", "413:too_many_pixels"),
    "JPEG with a 150 KB ICC profile": ("converted",               "answered",                "200"),
    "plain JPEG (control)":           ("kept",                    "answered",                "200"),
}
