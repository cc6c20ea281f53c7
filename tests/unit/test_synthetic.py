from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from linnaeus.data.synthetic import branching, draw, make_tree, write_folder_corpus
from linnaeus.taxonomy import RANKS


def test_tree_is_deterministic_by_seed_with_unique_lineages():
    a, b = make_tree(24, seed=5), make_tree(24, seed=5)
    assert [t.taxon.as_dict() for t in a] == [t.taxon.as_dict() for t in b]
    assert len({t.taxon for t in a}) == 24
    assert make_tree(24, seed=6)[0].taxon.genus != a[0].taxon.genus


def test_small_trees_still_branch_at_coarse_ranks():
    factors = branching(16)
    assert factors["species"] == factors["genus"] == factors["phylum"] == factors["family"] == 2
    tree = make_tree(16)
    assert len({t.taxon.phylum for t in tree}) == 2 and len({t.taxon.genus for t in tree}) == 8


def test_writes_folder_format_that_ingest_reads(tmp_path):
    write_folder_corpus(tmp_path, num_taxa=4, images_per_taxon=3, seed=1, size=48)
    with open(tmp_path / "taxa.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and set(rows[0]) == {"folder", *RANKS, "common_name"}
    images = sorted((tmp_path / "images").glob("*/*.jpg"))
    assert len(images) == 12 and Image.open(images[0]).size == (48, 48)


def test_images_are_identical_for_the_same_seed(tmp_path):
    write_folder_corpus(tmp_path / "a", 2, 2, seed=9, size=32)
    write_folder_corpus(tmp_path / "b", 2, 2, seed=9, size=32)
    for f in (tmp_path / "a" / "images").glob("*/*.jpg"):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def _colour_histogram(taxon, seed, n=16):
    """Mean joint RGB histogram (4 bins a channel): pose-invariant appearance of a taxon."""
    rng = np.random.default_rng(seed)
    hists = []
    for _ in range(n):
        pixels = np.asarray(draw(taxon, rng, 64)).reshape(-1, 3) // 64
        hists.append(np.bincount(pixels[:, 0] * 16 + pixels[:, 1] * 4 + pixels[:, 2], minlength=64))
    return np.mean(hists, axis=0) / (64 * 64)


def _mean_image_distance(t1, t2):
    return np.abs(_colour_histogram(t1, 0) - _colour_histogram(t2, 1)).sum()


def test_relatives_look_more_alike_than_distant_taxa():
    tree = make_tree(16, seed=0)
    sibling = next(t for t in tree[1:] if t.taxon.genus == tree[0].taxon.genus)
    distant = next(t for t in tree if t.taxon.phylum != tree[0].taxon.phylum)
    assert _mean_image_distance(tree[0], sibling) < _mean_image_distance(tree[0], distant)
