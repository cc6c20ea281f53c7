"""The training stream on a local Ray: batches, disjoint consumers, shuffling, corrupt rows, GPU mode."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from linnaeus import storage
from linnaeus.clip.models import tokenizer
from linnaeus.config import StreamConfig
from linnaeus.data import shards
from linnaeus.data.loader import iter_train_batches
from linnaeus.data.stream import build_stream, unit_order
from linnaeus.taxonomy import stable_hash64

pytestmark = pytest.mark.usefixtures("ray_local")
ROWS = 96  # 8 taxa x 12 images


@pytest.fixture(scope="module")
def corpus(ingest_synthetic):
    return ingest_synthetic(20)


def _cfg(corpus, **kw) -> StreamConfig:
    return StreamConfig(data=str(corpus), image_size=32, preprocess_batch=16, **kw)


def _all_ids(corpus) -> dict[int, str]:
    manifest = shards.read_manifest(storage.resolve(corpus))
    ids = [i for e in manifest.shards
           for i in pq.read_table(corpus / e.path, columns=["image_id"]).column(0).to_pylist()]
    return {stable_hash64(i): i for i in ids}


def test_batches_have_pixels_tokens_and_keys(corpus):
    stream = build_stream(_cfg(corpus))
    batches = list(iter_train_batches(stream.dataset.iterator(), stream.config, 16, drop_last=False))
    assert sum(len(b["sample_key"]) for b in batches) == ROWS
    first = batches[0]
    assert tuple(first["image"].shape) == (16, 3, 32, 32) and str(first["image"].dtype) == "torch.float32"
    assert tuple(first["text"].shape) == (16, 77) and str(first["text"].dtype) == "torch.int64"
    assert stream.skipped()["skipped"] == 0


def test_captions_follow_each_images_taxon(corpus):
    stream = build_stream(_cfg(corpus, text_types=["scientific"]))
    ids = _all_ids(corpus)
    tok = tokenizer("ViT-B-16", 77)
    for batch in stream.dataset.iter_batches(batch_size=32, batch_format="numpy"):
        for key, tokens in zip(batch["sample_key"], batch["text"]):
            genus, epithet = ids[int(key)].split("/")[0].split("_")
            expected = tok([f"a photo of {genus} {epithet}."])[0].numpy()
            assert np.array_equal(tokens, expected)


def test_two_consumers_get_disjoint_rows_covering_the_corpus(corpus):
    stream = build_stream(_cfg(corpus))
    splits = stream.dataset.streaming_split(2, equal=True)  # as Ray Train splits a dataset
    seen: list[list[int]] = [[], []]

    def consume(i):
        for batch in splits[i].iter_batches(batch_size=8, batch_format="numpy"):
            seen[i].extend(int(k) for k in batch["sample_key"])

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(seen[0]) == len(seen[1]) == ROWS // 2 and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(_all_ids(corpus))


def test_multi_epoch_stream_covers_each_epoch_once_in_a_new_order(corpus):
    stream = build_stream(_cfg(corpus, seed=4), epochs=2, start_epoch=3)
    rows = [(int(e), int(k)) for b in stream.dataset.iter_batches(batch_size=32, batch_format="numpy")
            for e, k in zip(b["epoch"], b["sample_key"])]
    per_epoch = Counter(e for e, _ in rows)
    assert per_epoch == {3: ROWS, 4: ROWS}
    assert {k for e, k in rows if e == 3} == {k for e, k in rows if e == 4} == set(_all_ids(corpus))
    assert list(unit_order(5, 4, 3)) != list(unit_order(5, 4, 4))
    assert list(unit_order(5, 4, 3)) == list(unit_order(5, 4, 3))


def test_rows_of_a_row_group_come_out_in_a_seeded_per_epoch_order(corpus):
    manifest = shards.read_manifest(storage.resolve(corpus))
    stored = [stable_hash64(i) for i in pq.read_table(corpus / manifest.shards[0].path,
                                                      columns=["image_id"]).column(0).to_pylist()]

    def order(seed, epoch):
        stream = build_stream(_cfg(corpus, seed=seed), start_epoch=epoch)
        keys = [int(k) for b in stream.dataset.iter_batches(batch_size=96, batch_format="numpy")
                for k in b["sample_key"]]
        return [k for k in keys if k in set(stored)]

    first = order(1, 0)
    assert sorted(first) == sorted(stored) and first != stored
    assert order(1, 0) == first  # reproducible: one row group is read and shuffled by one reader
    assert order(1, 1) != first and order(2, 0) != first


def test_corrupt_image_in_a_shard_is_skipped_counted_and_never_fatal(corpus, tmp_path):
    manifest = shards.read_manifest(storage.resolve(corpus))
    broken = tmp_path / "broken"
    broken.mkdir()
    table = pq.read_table(corpus / manifest.shards[0].path)
    images = table.column("image").to_pylist()
    images[0] = images[0][: len(images[0]) // 3]
    images[1] = b"definitely not a jpeg"
    table = table.set_column(0, "image", pa.array(images, pa.binary()))
    pq.write_table(table, broken / manifest.shards[0].path)  # one row group, as the manifest says
    for entry in manifest.shards[1:]:
        (broken / entry.path).write_bytes((corpus / entry.path).read_bytes())
    (broken / "_manifest.json").write_text(manifest.model_dump_json())
    for decode in ("cpu", "gpu", "hybrid"):
        stream = build_stream(_cfg(broken, decode=decode))
        batches = list(iter_train_batches(stream.dataset.iterator(), stream.config, 16,
                                          drop_last=False))
        kept = sum(len(b["sample_key"]) for b in batches)
        assert kept == ROWS - 2, decode
        assert all(len(b["image"]) == len(b["text"]) for b in batches)
        summary = stream.skipped()
        assert summary["skipped"] == 2 and sum(summary["by_reason"].values()) == 2


def test_gpu_mode_ships_jpeg_bytes_and_decodes_on_the_consumer(corpus):
    stream = build_stream(_cfg(corpus, decode="gpu"))
    # Iterators are run to the end: one left half-consumed keeps Ray Data threads alive past the test.
    raw = list(stream.dataset.iter_batches(batch_size=4, batch_format="numpy"))[0]
    assert raw["image"].dtype == object and bytes(raw["image"][0][:2]) == b"\xff\xd8"
    batch = list(iter_train_batches(stream.dataset.iterator(), stream.config, 8, device="cpu"))[0]
    assert tuple(batch["image"].shape) == (8, 3, 32, 32) and tuple(batch["text"].shape) == (8, 77)


@pytest.mark.parametrize("decode", ["cpu", "hybrid"])  # gpu cuts through hybrid's code (_columns)
def test_cut_text_drops_only_the_padding_after_each_batchs_longest_caption(corpus, decode):
    def tokens_by_key(**kw):
        stream = build_stream(_cfg(corpus, decode=decode, **kw))
        batches = list(iter_train_batches(stream.dataset.iterator(), stream.config, 16, device="cpu",
                                          drop_last=False))
        return batches, {int(k): t for b in batches for k, t in zip(b["sample_key"], b["text"])}

    _, full = tokens_by_key()
    batches, cut = tokens_by_key(cut_text=True)
    assert cut.keys() == full.keys()
    for batch in batches:
        length = batch["text"].shape[1]
        assert length % 16 == 0 and length < 77 and batch["text"][:, length - 16:].any()
        for key, tokens in zip(batch["sample_key"], batch["text"]):
            assert torch.equal(tokens, full[int(key)][:length]) and not full[int(key)][length:].any()


def test_hybrid_mode_ships_decoded_pixels_and_crops_on_the_consumer(corpus):
    stream = build_stream(_cfg(corpus, decode="hybrid"))
    raw = list(stream.dataset.iter_batches(batch_size=4, batch_format="numpy"))[0]
    h, w = int(raw["height"][0]), int(raw["width"][0])
    assert raw["image"].dtype == object and len(raw["image"][0]) == h * w * 3
    batch = list(iter_train_batches(stream.dataset.iterator(), stream.config, 8, device="cpu"))[0]
    assert tuple(batch["image"].shape) == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert tuple(batch["text"].shape) == (8, 77) and len(batch["sample_key"]) == 8


def test_missing_corpus_fails_naming_the_uri(tmp_path):
    with pytest.raises(shards.CorpusError, match=str(tmp_path / "nowhere")):
        build_stream(StreamConfig(data=str(tmp_path / "nowhere")))
