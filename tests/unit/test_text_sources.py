"""Text sources: the registry, BioCLIP's taxonomic source, and the sampler that draws a caption kind per
image (uniform over what the item can fill, reproducible by seed, per image or per batch)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from linnaeus.taxonomy import ALL_TEXT_TYPES, Taxon, TextType
from linnaeus.text import TEXT_SOURCES, Mixing, TextSampler, TextSource, make_source
from linnaeus.text.taxonomic import TaxonomicSource

MAGPIE = Taxon.from_ranks(dict(kingdom="Animalia", phylum="Chordata", **{"class": "Aves"},
                               order="Passeriformes", family="Corvidae", genus="Pica",
                               species="hudsonia"), "black-billed magpie")


def sampler_of(kinds=tuple(t.value for t in ALL_TEXT_TYPES), mixing=Mixing.PER_IMAGE, seed=0) -> TextSampler:
    return TextSampler(TaxonomicSource(), kinds, mixing, seed)


def test_per_image_draws_are_uniform_over_available_types():
    sampler = sampler_of(seed=7)
    counts = Counter(sampler.draw(MAGPIE, f"img{i}") for i in range(5000))
    assert set(counts) == {t.value for t in ALL_TEXT_TYPES}
    assert all(abs(c / 5000 - 0.2) < 0.03 for c in counts.values()), counts


def test_draws_never_pick_a_type_the_taxon_cannot_fill():
    genus_only = Taxon.from_ranks({"kingdom": "Animalia", "genus": "Geococcyx"})
    drawn = {sampler_of(seed=s).draw(genus_only, "x") for s in range(200)}
    assert drawn == {"taxonomic", "scientific"}


def test_draws_are_reproducible_by_seed_and_change_with_epoch():
    keys = [f"img{i}" for i in range(200)]
    a = sampler_of(seed=1).draw_batch([MAGPIE] * 200, keys, epoch=0)
    assert a == sampler_of(seed=1).draw_batch([MAGPIE] * 200, keys, epoch=0)
    assert a != sampler_of(seed=1).draw_batch([MAGPIE] * 200, keys, epoch=1)
    assert a != sampler_of(seed=2).draw_batch([MAGPIE] * 200, keys, epoch=0)


def test_per_batch_mixing_gives_one_type_per_batch():
    sampler = sampler_of(mixing=Mixing.PER_BATCH, seed=0)
    seen = set()
    for b in range(50):
        types = sampler.draw_batch([MAGPIE] * 16, [f"b{b}-{i}" for i in range(16)])
        assert len(set(types)) == 1
        seen |= set(types)
    assert seen == {t.value for t in ALL_TEXT_TYPES}


def test_per_batch_mixing_falls_back_for_taxa_missing_the_batch_type():
    no_common = dataclasses.replace(MAGPIE, common_name=None)
    sampler = sampler_of(kinds=["common", "scientific"], mixing="per_batch", seed=0)
    for b in range(20):
        types = sampler.draw_batch([MAGPIE, no_common], [f"{b}a", f"{b}b"])
        assert types[1] == TextType.SCIENTIFIC


def test_restricted_text_types_are_respected():
    sampler = sampler_of(kinds=["scientific"], seed=0)
    assert {sampler.draw(MAGPIE, i) for i in range(50)} == {"scientific"}
    assert sampler_of(kinds=["common"]).draw(dataclasses.replace(MAGPIE, common_name=None), "k") is None


def test_the_taxonomic_source_reads_the_rank_columns_and_captions_as_bioclip():
    source = make_source("taxonomic")
    assert source.columns == ("kingdom", "phylum", "class", "order", "family", "genus", "species", "common_name")
    items = source.items({c: [MAGPIE.as_dict()[c]] for c in source.columns})
    assert items == [MAGPIE] and items[0].common_name == "black-billed magpie"
    assert source.caption(items[0], "taxonomic_common") == MAGPIE.caption(TextType.TAXONOMIC_COMMON)


def test_an_unknown_source_or_kind_fails_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown text source 'captions'; known: .*taxonomic"):
        make_source("captions")
    with pytest.raises(ValueError, match=r"\['latin'\] are not kinds of the 'taxonomic' text source"):
        sampler_of(kinds=["latin"])


def test_a_second_source_plugs_into_the_sampler_without_touching_it():
    class Genus(TextSource):  # defined here only: registered for this test, removed after
        columns, kinds = ("genus",), ("genus", "shout")

        def items(self, columns):
            return list(columns["genus"])

        def caption(self, item, kind):
            if item is None:
                return None
            return f"a {item}" if kind == "genus" else (f"A {item.upper()}!" if len(item) > 4 else None)

    TEXT_SOURCES.register("test-genus")(Genus)
    try:
        sampler = TextSampler(make_source("test-genus"), ["genus", "shout"], seed=3)
        captions = sampler.captions_of_rows({"genus": ["Pica", "Corvus", None]}, ["a", "b", "c"])
        assert captions[0] == "a Pica"  # "Pica" cannot fill "shout": only "genus" is drawn
        assert captions[1] in ("a Corvus", "A CORVUS!") and captions[2] is None
    finally:
        TEXT_SOURCES._entries.pop("test-genus")
