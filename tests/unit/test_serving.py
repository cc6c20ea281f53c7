"""The serving library without Ray: request images, the label cache, label banks and the Predictor."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from linnaeus.clip.exports import export_model
from linnaeus.clip.models import create_model, tokenizer
from linnaeus.data.synthetic import draw, make_tree
from linnaeus.images import ImageLimits, ImageRejected, decode_image
from linnaeus.serving.bank import BankError, LabelBank, taxa_embeddings
from linnaeus.serving.labels import LabelCache
from linnaeus.serving.predictor import Predictor


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# --- images ---------------------------------------------------------------------------------------
def test_decode_image_refuses_each_bad_input_with_its_reason():
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    good = _jpeg(Image.fromarray(noise))
    cases = {
        "empty": (b"", ImageLimits()),
        "too_large": (good, ImageLimits(max_bytes=len(good) - 1)),
        "not_an_image": (b"hello, not an image", ImageLimits()),
        "too_many_pixels": (_png_header_only(100_000, 100_000), ImageLimits()),
        "extreme_aspect_ratio": (_png_header_only(20, 2_000_000), ImageLimits()),
        "undecodable": (good[: len(good) // 2], ImageLimits()),
    }
    for reason, (data, limits) in cases.items():
        with pytest.raises(ImageRejected) as err:
            decode_image(data, limits)
        assert err.value.reason == reason, (reason, err.value)
    assert decode_image(good).size == (160, 120)


def test_decode_image_applies_exif_rotation_and_converts_to_rgb():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(_jpeg(img, exif=exif.tobytes())).size == (20, 40)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    decoded = decode_image(buf.getvalue())
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)  # alpha on white


# --- label cache ----------------------------------------------------------------------------------
def test_label_cache_computes_only_missing_rows_and_evicts_least_recent():
    cache, calls = LabelCache(max_entries=3), []

    def compute(missing):
        calls.append(list(missing))
        return torch.tensor([[float(len(calls) * 10 + i)] for i in missing])

    first = cache.get_or_compute(["a", "b"], compute)
    second = cache.get_or_compute(["b", "c", "a"], compute)
    assert calls == [[0, 1], [1]]
    assert first[1].item() == second[0].item() and (cache.hits, cache.misses) == (2, 3)
    cache.get_or_compute(["d"], compute)  # evicts "b", the least recently used
    cache.get_or_compute(["b"], compute)
    assert calls[-1] == [0] and len(cache) == 3


def test_label_cache_rows_do_not_keep_their_whole_batch_alive():
    cache = LabelCache()
    cache.get_or_compute([str(i) for i in range(1000)], lambda missing: torch.ones(len(missing), 64))
    row = cache.get_or_compute(["7"], lambda missing: pytest.fail("cached"))[0]
    assert cache._entries["7"].untyped_storage().nbytes() == 64 * 4 and row.shape == (64,)


# --- predictor ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = create_model("linnaeus-tiny", seed=0)
    out = tmp_path_factory.mktemp("model")
    export_model(model, "linnaeus-tiny", str(out))
    return str(out)


@pytest.fixture(scope="module")
def tree():
    return make_tree(12, seed=1)


@pytest.fixture(scope="module")
def predictor(exported, tree):
    bare = Predictor(exported, device="cpu")
    embeddings = taxa_embeddings(bare.model, bare.tokenizer, [t.taxon for t in tree],
                                 ["taxonomic_common"], "single")
    LabelBank([t.taxon for t in tree], embeddings,
              {"model_digest": bare.model_id, "dim": embeddings.shape[1]}).save(f"{exported}/label_bank")
    return Predictor(exported, device="cpu")  # finds the bank next to the model


def _photos(tree, n=3):
    rng = np.random.default_rng(0)
    return [draw(tree[i], rng, size=80) for i in range(n)]


def test_pixels_then_encode_equals_open_clip_eval_transform(predictor, tree):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**predictor.model.visual.preprocess_cfg), is_train=False)
    photos = _photos(tree) + [Image.new("RGB", (120, 50), (30, 90, 10))]
    with torch.no_grad():
        reference = predictor.model.encode_image(torch.stack([transform(p) for p in photos]), normalize=True)
    assert predictor.pixels(photos[0]).dtype == torch.uint8
    torch.testing.assert_close(predictor.image_features(photos), reference, rtol=1e-4, atol=1e-5)


def test_crop_converts_other_modes_like_open_clip_and_leaves_rgb_uncopied(predictor):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from linnaeus.clip.preprocess import eval_crop

    cfg = predictor.model.visual.preprocess_cfg
    crop = eval_crop(cfg)
    full = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    gray = Image.fromarray(np.arange(120 * 90, dtype=np.uint32).reshape(90, 120).astype(np.uint8), "L")
    ours = torch.from_numpy(np.asarray(crop(gray), dtype=np.float32).transpose(2, 0, 1) / 255)
    theirs = full(gray)  # converted, cropped, normalised by open_clip
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    torch.testing.assert_close((ours - mean) / std, theirs, rtol=0, atol=1e-5)
    rgb = Image.new("RGB", (64, 64))
    assert crop.transforms[-1](rgb) is rgb


def test_classify_ranks_labels_by_softmax_and_reuses_cached_label_embeddings(predictor, tree):
    labels = ["a red bird", "a blue fish", "a green leaf", "a snail"]
    photos = _photos(tree)
    answers = predictor.classify(photos, labels, k=3, templates="openai")
    weights = predictor.label_embeddings(labels, "openai")
    probs = (predictor.logit_scale * predictor.image_features(photos) @ weights.T).softmax(-1)
    for row, answer in zip(probs, answers):
        assert [a["label"] for a in answer] == [labels[i] for i in row.topk(3).indices]
        assert answer[0]["probability"] == pytest.approx(float(row.max()), rel=1e-5)
    hits = predictor.cache.hits
    predictor.classify(photos, labels[:2] + ["a moth"], k=1)
    assert predictor.cache.hits == hits + 2  # two labels cached, only "a moth" encoded


def test_taxonomy_sums_species_probabilities_up_the_tree(predictor, tree):
    photos = _photos(tree, 2)
    species = predictor.predict(photos, rank="species", k=len(tree))
    genus = predictor.predict(photos, rank="genus", k=len(tree))
    for sp, ge in zip(species, genus):
        assert sum(a["probability"] for a in sp) == pytest.approx(1.0, abs=1e-4)
        by_genus = {}
        for a in sp:
            by_genus[a["lineage"]["genus"]] = by_genus.get(a["lineage"]["genus"], 0) + a["probability"]
        assert {a["name"]: pytest.approx(a["probability"], abs=1e-5) for a in ge} == by_genus
        assert set(ge[0]["lineage"]) == {"kingdom", "phylum", "class", "order", "family", "genus"}
        assert sp[0]["name"] == f"{sp[0]['lineage']['genus']} {sp[0]['lineage']['species']}"


def test_taxonomy_subset_restricts_answers_and_unknown_names_are_named(predictor, tree):
    family = tree[0].taxon.family
    members = {t.taxon.scientific_name() for t in tree if t.taxon.family == family}
    answers = predictor.predict(_photos(tree, 2), rank="species", k=50, subset=[family.upper()])
    for answer in answers:
        assert {a["name"] for a in answer} == members
        assert sum(a["probability"] for a in answer) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(BankError, match="Nonexistus"):
        predictor.predict(_photos(tree, 1), subset=[family, "Nonexistus"])
    with pytest.raises(BankError, match="rank 'tribe'"):
        predictor.predict(_photos(tree, 1), rank="tribe")
    with pytest.raises(BankError, match=tree[0].taxon.species):  # a bare epithet names no taxon
        predictor.bank.subset([tree[0].taxon.species])
    assert len(predictor.bank.subset([tree[0].taxon.scientific_name()])) == 1


def test_bank_round_trips_and_a_bank_of_other_weights_is_refused(predictor, exported, tmp_path, tree):
    bank = LabelBank.load(f"{exported}/label_bank")
    assert [t.key for t in bank.taxa] == [t.taxon.key for t in tree]
    torch.testing.assert_close(bank.embeddings, predictor.bank.embeddings)
    other = tmp_path / "other"
    export_model(create_model("linnaeus-tiny", seed=1), "linnaeus-tiny", str(other))
    with pytest.raises(BankError, match="built for model"):
        Predictor(str(other), bank=f"{exported}/label_bank", device="cpu")
    assert Predictor(str(other), device="cpu").bank is None  # none next to it: rank answers say so
    with pytest.raises(BankError, match="no label bank"):
        Predictor(str(other), device="cpu").predict(_photos(tree, 1))


def test_bank_parts_without_common_names_load_beside_parts_with_them(tmp_path, tree):
    import pyarrow.parquet as pq

    from linnaeus.serving.bank import to_table, write_meta
    from linnaeus.storage import resolve
    from linnaeus.taxonomy import Taxon

    plain = [Taxon(*t.taxon.lineage) for t in tree[:3]]  # no common names at all
    pq.write_table(to_table(plain, np.zeros((3, 4), np.float32)), tmp_path / "part-a.parquet")
    pq.write_table(to_table([t.taxon for t in tree[3:5]], np.ones((2, 4), np.float32)), tmp_path / "part-b.parquet")
    write_meta(resolve(str(tmp_path)), {"dim": 4})
    bank = LabelBank.load(str(tmp_path))
    assert len(bank) == 5 and bank.taxa[0].common_name is None and bank.taxa[4].common_name


def test_text_embeddings_equal_the_model_on_raw_text(predictor):
    texts = ["Animalia Chordata Aves", "a photo of a bird."]
    with torch.no_grad():
        reference = predictor.model.encode_text(tokenizer("linnaeus-tiny")(texts), normalize=True)
    torch.testing.assert_close(predictor.embed_texts(texts), reference, rtol=1e-4, atol=1e-5)


def test_graph_buckets_cover_every_batch_size_up_to_the_max():
    from linnaeus.serving.graphs import buckets

    assert buckets(8) == [1, 2, 4, 8] and buckets(12) == [1, 2, 4, 8, 12] and buckets(1) == [1]


def test_a_rebuilt_bank_replaces_the_old_parts_only_once_the_new_ones_are_written(tmp_path, tree):
    import pyarrow.parquet as pq

    from linnaeus.batch.label_bank import _swap_in
    from linnaeus.serving.bank import to_table, write_meta
    from linnaeus.storage import resolve

    out, staging = resolve(str(tmp_path / "bank")), resolve(str(tmp_path / "bank" / "_staging-x"))
    (tmp_path / "bank" / "_staging-x").mkdir(parents=True)
    pq.write_table(to_table([t.taxon for t in tree[:2]], np.zeros((2, 4), np.float32)),
                   tmp_path / "bank" / "old.parquet")
    write_meta(out, {"dim": 4})
    pq.write_table(to_table([t.taxon for t in tree[2:5]], np.ones((3, 4), np.float32)),
                   tmp_path / "bank" / "_staging-x" / "new.parquet")
    assert len(LabelBank.load(out.uri)) == 2  # staged parts are invisible until swapped in
    _swap_in(staging, out)
    write_meta(out, {"dim": 4})
    assert sorted(p.name for p in (tmp_path / "bank").iterdir()) == ["_bank.json", "new.parquet"]
    assert len(LabelBank.load(out.uri)) == 3


def test_bank_groups_at_species_keep_common_names_and_coarser_groups_have_none():
    taxa = [t.taxon for t in make_tree(6, seed=2)]
    bank = LabelBank(taxa, torch.nn.functional.normalize(torch.randn(len(taxa), 4), dim=-1))
    of_entry, species = bank.groups("species")
    assert [g.common_name for g in species] == [t.common_name for t in taxa] and all(g.common_name for g in species)
    assert of_entry.tolist() == list(range(len(taxa)))
    _, genera = bank.groups("genus")
    assert genera and all(g.common_name is None and g.species is None for g in genera)
