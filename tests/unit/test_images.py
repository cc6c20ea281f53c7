from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from linnaeus.images import ImageRejected, clean_image, decode_rgb


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(w: int = 40, h: int = 30) -> Image.Image:
    arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def test_plain_rgb_jpeg_keeps_its_original_bytes():
    data = encode(rgb())
    clean = clean_image(data)
    assert clean.data == data and clean.converted is None and (clean.width, clean.height) == (40, 30)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"this is a text file, not an image\n", "not_an_image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "not_an_image"),
])
def test_unusable_bytes_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ImageRejected) as info:
        clean_image(data)
    assert info.value.reason == reason


def test_truncated_jpeg_is_rejected_as_undecodable():
    data = encode(rgb(200, 200), quality=95)
    with pytest.raises(ImageRejected) as info:
        clean_image(data[: len(data) // 2])
    assert info.value.reason == "undecodable"


def test_decompression_bomb_is_refused_from_the_header_alone():
    bomb = encode(Image.new("L", (3000, 3000)), "PNG")  # tiny file, 9 MP
    with pytest.raises(ImageRejected) as info:
        clean_image(bomb, max_pixels=1_000_000)
    assert info.value.reason == "too_many_pixels" and "3000x3000" in info.value.detail


def test_cmyk_is_converted_to_rgb_jpeg():
    clean = clean_image(encode(rgb().convert("CMYK")))
    assert "cmyk->rgb" in clean.converted and Image.open(io.BytesIO(clean.data)).mode == "RGB"


def test_sixteen_bit_grayscale_is_scaled_to_eight_bit_rgb():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    clean = clean_image(encode(Image.fromarray(ramp), "PNG"))
    out = np.asarray(Image.open(io.BytesIO(clean.data)))
    assert out.shape == (64, 64, 3) and "png->jpeg" in clean.converted
    assert out.max() > 200 and out.min() < 10  # full range preserved, not clipped to white


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    clean = clean_image(encode(img, "PNG"))
    out = np.asarray(Image.open(io.BytesIO(clean.data)))
    assert out.mean() > 245 and "rgba->rgb" in clean.converted


def test_palette_with_transparency_is_converted():
    img = Image.new("P", (16, 16), 0)
    img.info["transparency"] = 0
    clean = clean_image(encode(img, "PNG", transparency=0))
    assert Image.open(io.BytesIO(clean.data)).mode == "RGB"


def test_resize_shrinks_the_shorter_side_and_never_upsamples():
    clean = clean_image(encode(rgb(400, 300)), resize=150)
    assert (clean.width, clean.height) == (200, 150) and clean.converted == "resized"
    small = clean_image(encode(rgb(40, 30)), resize=150)
    assert (small.width, small.height) == (40, 30) and small.converted is None


def test_exif_rotation_is_applied():
    img = rgb(40, 30)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    clean = clean_image(encode(img, exif=exif))
    assert (clean.width, clean.height) == (30, 40) and "exif-rotated" in clean.converted
    assert Image.open(io.BytesIO(clean.data)).size == (30, 40)


def test_decode_rgb_rejects_corrupt_stored_bytes():
    assert decode_rgb(encode(rgb())).mode == "RGB"
    with pytest.raises(ImageRejected):
        decode_rgb(b"garbage")


def test_an_oversized_icc_profile_is_dropped_at_ingest_and_a_normal_one_kept():
    big = encode(rgb(), icc_profile=b"\x01" * 150_000)
    clean = clean_image(big)
    assert clean.converted == "icc-dropped" and len(clean.data) < 20_000
    assert "icc_profile" not in Image.open(io.BytesIO(clean.data)).info
    small = encode(rgb(), icc_profile=b"\x01" * 3_000)
    assert clean_image(small).data == small
