from __future__ import annotations

import tarfile

import pytest

from linnaeus.taxonomy import (
    Taxon,
    TaxonomyError,
    TextType,
    normalise_rank,
    parse_tagged,
    text_type_counts,
)

MAGPIE = Taxon.from_ranks(dict(kingdom="Animalia", phylum="Chordata", **{"class": "Aves"},
                               order="Passeriformes", family="Corvidae", genus="Pica",
                               species="hudsonia"), "black-billed magpie")


def test_placeholders_become_missing_and_whitespace_collapses():
    taxon = Taxon.from_ranks({"kingdom": "  Animalia ", "phylum": "NA", "class": "unknown",
                              "order": "", "family": "n/a", "genus": "Pica\t", "species": None})
    assert taxon.lineage == ("Animalia", None, None, None, None, "Pica", None)


def test_rank_case_follows_bioclip_corpus():
    assert normalise_rank("kingdom", "ANIMALIA") == "Animalia"
    assert normalise_rank("genus", "pica") == "Pica"
    assert normalise_rank("species", "Hudsonia") == "hudsonia"
    assert normalise_rank("kingdom", "Metazoa") == "Animalia"
    assert normalise_rank("kingdom", "Chloroplastida") == "Plantae"


def test_binomial_in_species_field_keeps_the_epithet():
    taxon = Taxon.from_ranks({"genus": "Pica", "species": "Pica hudsonia"})
    assert taxon.species == "hudsonia"


def test_homonyms_in_different_kingdoms_are_different_taxa():
    mulberry = Taxon.from_ranks({"kingdom": "Plantae", "genus": "Morus", "species": "alba"})
    gannet = Taxon.from_ranks({"kingdom": "Animalia", "genus": "Morus", "species": "bassanus"})
    gannet_genus = Taxon.from_ranks({"kingdom": "Animalia", "genus": "Morus"})
    plant_genus = Taxon.from_ranks({"kingdom": "Plantae", "genus": "Morus"})
    assert gannet_genus != plant_genus and len({gannet_genus, plant_genus, mulberry, gannet}) == 4


def test_common_name_is_not_part_of_identity():
    other = Taxon(*MAGPIE.lineage, common_name="American magpie")
    assert other == MAGPIE and hash(other) == hash(MAGPIE)


@pytest.mark.parametrize("ranks, message", [
    ({}, "no rank is known"),
    ({"species": "hudsonia"}, "without a genus"),
    ({"genus": "Pi\x00ca"}, "control characters"),
])
def test_malformed_lineages_are_refused_with_the_reason(ranks, message):
    with pytest.raises(TaxonomyError, match=message):
        Taxon.from_ranks(ranks)


def test_five_text_types_render_as_bioclip_corpus():
    assert MAGPIE.caption("taxonomic") == \
        "a photo of Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia."
    assert MAGPIE.caption("scientific") == "a photo of Pica hudsonia."
    assert MAGPIE.caption("common") == "a photo of black-billed magpie."
    assert MAGPIE.caption("scientific_common") == \
        "a photo of Pica hudsonia with common name black-billed magpie."
    assert MAGPIE.caption("taxonomic_common") == ("a photo of Animalia Chordata Aves Passeriformes "
                                                 "Corvidae Pica hudsonia with common name "
                                                 "black-billed magpie.")
    assert MAGPIE.name("scientific") == "Pica hudsonia"  # the plain name, no template


def test_genus_only_taxon_offers_genus_level_names():
    roadrunner = Taxon.from_ranks({"kingdom": "Animalia", "phylum": "Chordata", "class": "Aves",
                                   "order": "Cuculiformes", "family": "Cuculidae",
                                   "genus": "Geococcyx"})
    assert roadrunner.caption("taxonomic") == \
        "a photo of Animalia Chordata Aves Cuculiformes Cuculidae Geococcyx."
    assert roadrunner.caption("scientific") == "a photo of Geococcyx."
    assert roadrunner.available_text_types() == (TextType.TAXONOMIC, TextType.SCIENTIFIC)


def test_family_level_taxon_has_no_scientific_name():
    family = Taxon.from_ranks({"kingdom": "Animalia", "family": "Corvidae"}, "crows")
    assert family.available_text_types() == (TextType.TAXONOMIC, TextType.COMMON,
                                             TextType.TAXONOMIC_COMMON)


def test_captions_match_every_sample_of_the_tol_sample_corpus(shared_data):
    members = {".taxon.txt": "taxonomic", ".sci.txt": "scientific", ".com.txt": "common",
               ".sci_com.txt": "scientific_common", ".taxon_com.txt": "taxonomic_common"}
    checked = 0
    with tarfile.open(shared_data / "tol-sample" / "shard-000000.tar") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")}
    for name, tag in files.items():
        if not name.endswith(".taxonTag.txt"):
            continue
        key = name[: -len(".taxonTag.txt")]
        taxon = parse_tagged(tag, files[key + ".common_name.txt"])
        for suffix, text_type in members.items():
            assert taxon.caption(text_type) == files[key + suffix].strip(), (key, suffix)
            checked += 1
    assert checked >= 400


def test_tagged_name_round_trips_through_parse_tagged():
    genus_only = Taxon.from_ranks({"kingdom": "Animalia", "class": "Aves", "genus": "Geococcyx"})
    for taxon in (MAGPIE, genus_only):
        assert parse_tagged(f"a photo of {taxon.tagged_name()}.") == taxon


def test_parse_tagged_reads_ranks_by_their_tags():
    taxon = parse_tagged("a photo of kingdom Animalia phylum Chordata class Aves order "
                         "Cuculiformes family Cuculidae genus Geococcyx.")
    assert taxon.genus == "Geococcyx" and taxon.species is None and taxon.class_ == "Aves"
    with pytest.raises(TaxonomyError, match="not a tagged lineage"):
        parse_tagged("a photo of Animalia Chordata.")


def test_text_type_counts_count_rows_per_type():
    counts = text_type_counts([MAGPIE, Taxon(*MAGPIE.lineage)])
    assert counts == {"taxonomic": 2, "scientific": 2, "common": 1, "scientific_common": 1,
                      "taxonomic_common": 1}
