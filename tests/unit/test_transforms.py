"""The stream's per-row work (transform, tokeniser, JPEG check) and the device decode path on CPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from linnaeus.clip.models import tokenizer
from linnaeus.clip.preprocess import train_pixels, train_transform
from linnaeus.data.device_decode import augment, crop_boxes, decode_and_augment, normalise, resized_crops, upload_pixels
from linnaeus.data.stream import looks_like_jpeg
from linnaeus.images import decode_rgb


def jpeg(w=80, h=60, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def test_tokenizer_gives_77_tokens_with_start_and_end():
    tokens = tokenizer("ViT-B-16", 77)(["a photo of Pica hudsonia.", "x " * 200])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int64
    start, end = tokens[0, 0].item(), tokens[0].max().item()
    assert tokens[1, 0] == start and tokens[1, -1] == end  # long captions are cut, end kept


def test_train_transform_crops_to_model_size_and_normalises():
    out = train_transform(64, (0.9, 1.0))(Image.open(io.BytesIO(jpeg())))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert out.min() < -1.0 and out.max() > 1.0  # CLIP mean/std applied, not raw [0, 1]


def test_uint8_crop_then_normalise_equals_open_clips_transform():
    data = jpeg(90, 70)
    torch.manual_seed(5)
    crop = train_pixels(decode_rgb(data), 48, (0.5, 1.0))
    split = normalise(torch.from_numpy(crop).unsqueeze(0))[0]
    torch.manual_seed(5)
    whole = train_transform(48, (0.5, 1.0))(Image.open(io.BytesIO(data)))
    assert crop.dtype == np.uint8
    assert torch.allclose(split, whole, atol=1e-5)


def test_jpeg_structure_check_catches_truncation():
    data = jpeg()
    assert looks_like_jpeg(data) and not looks_like_jpeg(data[: len(data) // 2])
    assert not looks_like_jpeg(b"\x89PNG....")


def test_device_decode_on_cpu_skips_corrupt_images_and_keeps_the_rest():
    good = [jpeg(seed=i) for i in range(3)]
    batch = [good[0], good[1][: len(good[1]) // 3], good[2], b"not a jpeg"]
    images, keep = decode_and_augment(batch, 32, (0.9, 1.0), "cpu", torch.Generator().manual_seed(0))
    assert keep.tolist() == [True, False, True, False] and images.shape == (2, 3, 32, 32)


def test_device_decode_matches_pil_pixels_for_a_full_crop():
    data = jpeg(64, 64)
    images, _ = decode_and_augment([data], 64, (1.0, 1.0), "cpu")
    reference = train_transform(64, (1.0, 1.0))(Image.open(io.BytesIO(data)))
    # Same crop (the whole image, no resize) and normalisation; decoders differ by rounding only.
    assert images.shape == (1, 3, 64, 64)
    assert torch.allclose(images[0], reference, atol=0.1)


def test_uploaded_pixels_are_each_image_channels_first():
    arrays = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(5, 7), (9, 4), (3, 3)])]
    views = upload_pixels([a.tobytes() for a in arrays], [5, 9, 3], [7, 4, 3], "cpu")
    for view, array in zip(views, arrays):
        assert torch.equal(view, torch.from_numpy(array).permute(2, 0, 1))
    with pytest.raises(ValueError, match="image 1: 108 bytes is not 9 x 5 x 3 RGB pixels"):
        upload_pixels([a.tobytes() for a in arrays], [5, 9, 3], [7, 5, 3], "cpu")


def test_hybrid_augment_of_uploaded_pixels_equals_the_jpeg_paths():
    data = [jpeg(80, 60, seed=1), jpeg(50, 70, seed=2)]
    decoded = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in data]
    views = upload_pixels([a.tobytes() for a in decoded], [a.shape[0] for a in decoded],
                          [a.shape[1] for a in decoded], "cpu")
    hybrid = augment(views, 32, (0.5, 1.0), torch.device("cpu"), torch.Generator().manual_seed(3))
    jpeg_path, _ = decode_and_augment(data, 32, (0.5, 1.0), "cpu", torch.Generator().manual_seed(3))
    # Same boxes and resize; PIL and torchvision's libjpeg decodes differ by rounding only.
    assert hybrid.shape == (2, 3, 32, 32) and torch.allclose(hybrid, jpeg_path, atol=0.1)


@pytest.mark.parametrize("size", [16, 48])
def test_device_decode_of_an_empty_batch_has_the_right_shape(size):
    images, keep = decode_and_augment([], size, (0.9, 1.0), "cpu")
    assert images.shape == (0, 3, size, size) and keep.numel() == 0


def test_crop_boxes_for_a_batch_keep_torchvisions_rule():
    sizes = [(100, 200), (256, 300), (40, 41), (30, 600)]  # the last cannot fit a 3:4..4:3 box of 90%
    boxes = crop_boxes(sizes * 25, (0.5, 1.0), torch.Generator().manual_seed(0))
    assert np.array_equal(boxes, crop_boxes(sizes * 25, (0.5, 1.0), torch.Generator().manual_seed(0)))
    for (height, width), (top, left, h, w) in zip(sizes * 25, boxes):
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        if (height, width) != (30, 600):
            assert 0.5 * height * width * 0.9 <= h * w and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    top, left, h, w = boxes[3]  # fallback: a central crop at the nearest allowed ratio (4:3)
    assert (h, w) == (30, 40) and left == (600 - 40) // 2


def _gradient(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256]).to(torch.uint8)


def test_resized_crops_equal_each_image_cut_alone_whatever_the_padding():
    images = [_gradient(60, 90), _gradient(200, 150), _gradient(64, 64), _gradient(31, 47)]
    boxes = crop_boxes([tuple(i.shape[-2:]) for i in images], (0.6, 1.0), torch.Generator().manual_seed(1))
    together = resized_crops(images, boxes, 32)
    alone = torch.cat([resized_crops([i], b[None], 32) for i, b in zip(images, boxes)])
    small_batches = resized_crops(images, boxes, 32, max_padded=3 * 64 * 64 * 2)
    assert together.shape == (4, 3, 32, 32)
    assert torch.allclose(together, alone, atol=1e-3) and torch.allclose(small_batches, alone, atol=1e-3)


def test_a_full_crop_at_the_same_size_is_the_image_itself():
    image = _gradient(48, 48)
    out = resized_crops([image, _gradient(100, 120)], np.array([[0, 0, 48, 48], [0, 0, 100, 120]]), 48)
    assert torch.equal(out[0], image.float())


def test_resized_crops_stay_close_to_an_antialiased_resize():
    image = _gradient(200, 300)
    box = np.array([[20, 30, 150, 200]])
    ours = resized_crops([image], box, 64)[0]
    reference = torch.nn.functional.interpolate(image[None, :, 20:170, 30:230].float(), size=(64, 64),
                                                mode="bilinear", antialias=True, align_corners=False)[0]
    assert (ours - reference).abs().mean() < 2.0  # grey levels, on smooth content
