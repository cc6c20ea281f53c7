"""The evaluation math on small hand-checked cases, and the zero-shot classifier against open_clip's."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from linnaeus.clip.models import create_model
from linnaeus.clip.templates import TEMPLATES
from linnaeus.clip.towers import average_templates, classifier
from linnaeus.eval import fewshot, hierarchy, ranks, retrieval, zeroshot
from linnaeus.taxonomy import Taxon, TextType
from linnaeus.text.taxonomic import class_names

PICA = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia", "black-billed magpie")
PICA2 = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica", "Eurasian magpie")
CORVUS = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", None)
ROSA = Taxon("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina", "dog rose")


def test_zero_shot_classifier_equals_open_clips_builder():
    torch.manual_seed(0)
    model = create_model("linnaeus-tiny").eval()
    tokenizer = open_clip.get_tokenizer("linnaeus-tiny")
    names, fallbacks = class_names([PICA, PICA2, CORVUS, ROSA], "common")
    assert fallbacks == 1 and names[2] == CORVUS.taxonomic_name()  # no common name: taxonomic instead
    ours = classifier(model, tokenizer, names, TEMPLATES["openai"], torch.device("cpu"), texts_per_batch=100)
    theirs = build_zero_shot_classifier(model, tokenizer, names, TEMPLATES["openai"],
                                        num_classes_per_batch=3)
    assert ours.shape == (64, 4) and torch.allclose(ours, theirs, atol=1e-5)


def test_class_texts_mirror_the_training_captions():
    names, _ = class_names([PICA], "scientific_common")
    assert names == ["Pica hudsonia with common name black-billed magpie"]
    assert TEMPLATES["single"][0](names[0]) == PICA.caption("scientific_common")


def test_topk_accuracy_on_a_hand_made_case():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 1, 2])
    top = zeroshot.top_classes(logits, torch.eye(3), k=2)
    assert zeroshot.accuracy_from_top(top, labels, ks=(1, 2)) == {"top1": pytest.approx(1 / 3),
                                                                   "top2": pytest.approx(1.0)}


def test_rank_accuracy_via_the_predicted_species_lineage():
    scores = ranks.via_species(predicted=[PICA2, CORVUS, ROSA], truth=[PICA, PICA, PICA])
    assert scores["genus"]["top1"] == pytest.approx(1 / 3)   # only Pica pica shares the genus
    assert scores["family"]["top1"] == pytest.approx(2 / 3)  # Corvus is still Corvidae
    assert scores["kingdom"]["top1"] == pytest.approx(2 / 3) and scores["species"]["images"] == 3


def test_rank_classes_are_the_distinct_truncated_lineages():
    classes, index = ranks.rank_classes([PICA, PICA2, CORVUS, ROSA, Taxon("Animalia")], "genus")
    assert [c.taxonomic_name() for c in classes] == [
        "Animalia Chordata Aves Passeriformes Corvidae Corvus", "Animalia Chordata Aves Passeriformes Corvidae Pica",
        "Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa"]
    assert index.tolist() == [1, 1, 0, 2, -1]


def _clusters(per_class: int = 6, classes: int = 4, spread: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:classes] * 3
    features = torch.cat([c + spread * torch.randn(per_class, 8, generator=g) for c in centres])
    return features, torch.arange(classes).repeat_interleave(per_class)


def test_simpleshot_separates_clean_clusters_and_is_reproducible():
    features, labels = _clusters()
    result = fewshot.simpleshot(features, labels, k=1, seeds=5)
    assert result["mean"] == 1.0 and result["std"] == 0.0 and result["classes"] == 4
    noisy, labels = _clusters(spread=2.0)
    a, b = fewshot.simpleshot(noisy, labels, k=5, seeds=3), fewshot.simpleshot(noisy, labels, k=5, seeds=3)
    assert a["per_seed"] == b["per_seed"] and 0.0 < a["mean"] < 1.0


def test_simpleshot_never_queries_its_support_and_drops_classes_too_small():
    support, query = fewshot._split(np.array([0, 0, 0, 1, 1, 2]), 2, np.random.default_rng(0))
    assert set(support) & set(query) == set() and len(query) == 1  # class 1 has no query left, class 2 too few
    features, labels = _clusters(per_class=3)
    labels[-1] = 4  # a class with one image
    assert fewshot.simpleshot(features, labels, k=1)["classes_left_out"] == 1


def test_simpleshot_centres_on_the_support_mean():
    """A shared offset on every feature changes nothing once centred (plain L2 would be fooled)."""
    features, labels = _clusters(spread=0.8)
    shifted = features + 25.0
    assert fewshot.simpleshot_once(shifted, labels, 1, 0) == fewshot.simpleshot_once(features, labels, 1, 0)


def test_recall_at_k_counts_hits_both_ways():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caption = torch.tensor([0, 1, 1])  # image 2's caption is text 1, but it sits between both
    r = retrieval.recall_at_k(images, texts, caption, ks=(1, 2))
    assert r["image_to_text_r1"] == pytest.approx(2 / 3) and r["image_to_text_r2"] == 1.0
    assert r["text_to_image_r1"] == 1.0


def test_knn_agreement_is_high_for_features_that_follow_the_tree():
    taxa = [PICA] * 5 + [PICA2] * 5 + [CORVUS] * 5 + [ROSA] * 5
    genus_of = {PICA: 0, PICA2: 0, CORVUS: 1, ROSA: 2}
    g = torch.Generator().manual_seed(0)
    features = torch.stack([torch.eye(6)[genus_of[t]] * 4 + torch.eye(6)[3 + (t == PICA2)] * 0.5
                            + 0.05 * torch.randn(6, generator=g) for t in taxa])
    scores = hierarchy.knn_agreement(features, taxa, k=4)
    assert scores["genus"]["agreement"] == 1.0 and scores["kingdom"]["agreement"] == 1.0
    assert scores["genus"]["chance"] < 0.6 and scores["species"]["taxa"] == 4
    png = hierarchy.pca_map_png(features, taxa, "genus", "test")
    assert png[:4] == b"\x89PNG"


def test_chunked_computation_gives_the_same_figures_as_whole_matrices():
    g = torch.Generator().manual_seed(3)
    features, weights = torch.randn(50, 8, generator=g), torch.randn(8, 7, generator=g)
    torch.randint(0, 7, (50,), generator=g)  # keep the generator where the texts below expect it
    whole = (features @ weights).topk(5, dim=1).indices
    assert torch.equal(zeroshot.top_classes(features, weights, chunk=7), whole)
    texts, caption = torch.randn(7, 8, generator=g), torch.randint(0, 7, (50,), generator=g)
    assert retrieval.recall_at_k(features, texts, caption, chunk=3) == retrieval.recall_at_k(features, texts, caption)
    taxa = [PICA, PICA2, CORVUS, ROSA, PICA] * 10
    assert hierarchy._neighbours(features, 4, chunk=6).tolist() == hierarchy._neighbours(features, 4).tolist()
    sampled, sampled_taxa = hierarchy.sample(features, taxa, 20)
    assert len(sampled) == len(sampled_taxa) == 20 and hierarchy.sample(features, taxa, 20)[1] == sampled_taxa


def test_simpleshot_split_takes_exactly_k_per_usable_class_and_varies_with_the_seed():
    labels = np.repeat(np.arange(50), np.arange(1, 51))  # class c has c + 1 images
    support, query = fewshot._split(labels, 5, np.random.default_rng(1))
    assert set(support) & set(query) == set() and len(support) + len(query) == int((labels >= 5).sum())
    assert np.bincount(labels[support], minlength=50).tolist() == [0] * 5 + [5] * 45
    other, _ = fewshot._split(labels, 5, np.random.default_rng(2))
    assert set(other) != set(support)


def test_retrieval_blocks_respect_the_similarity_budget_and_keep_the_figures():
    g = torch.Generator().manual_seed(4)
    images, texts = torch.randn(40, 8, generator=g), torch.randn(9, 8, generator=g)
    caption = torch.randint(0, 9, (40,), generator=g)
    # A budget of 20 similarities means blocks of 2 images (x 9 texts) and of 1 text (x 40 images).
    assert retrieval.recall_at_k(images, texts, caption, budget=20) == retrieval.recall_at_k(images, texts, caption)


def test_embedding_actors_always_leave_cpus_for_reading_and_decoding():
    from linnaeus.eval.embed import DECODE_CPUS, READ_CPUS, encode_resources

    def fits(cluster, actors, res):
        return actors * res["num_cpus"] + READ_CPUS + DECODE_CPUS <= cluster["CPU"] + 1e-9

    for cluster, want in [({"CPU": 2.0}, None), ({"CPU": 2.0}, 3), ({"CPU": 16.0}, None),
                          ({"CPU": 2.0, "GPU": 1.0}, None), ({"CPU": 4.0, "GPU": 2.0}, None),
                          ({"CPU": 16.0, "GPU": 1.0}, 12), ({"CPU": 1.0}, None)]:
        actors, res = encode_resources(cluster, want)
        assert res["num_cpus"] > 0 and fits(cluster, actors, res), (cluster, want, actors, res)
    assert encode_resources({"CPU": 16.0, "GPU": 1.0}, None) == (4, {"num_cpus": 0.25, "num_gpus": 0.25})
    assert encode_resources({"CPU": 16.0}, 3) == (3, {"num_cpus": 1.0})
    # three actors on two GPUs: two share one GPU, so each asks for half of one (2/3 would leave one out)
    assert encode_resources({"CPU": 16.0, "GPU": 2.0}, 3)[1]["num_gpus"] == 0.5
    assert encode_resources({"CPU": 16.0, "GPU": 1.0}, 7)[1]["num_gpus"] * 7 <= 1.0
    with pytest.raises(ValueError, match="0.5 CPUs"):
        encode_resources({"CPU": 0.5}, None)


def test_classifiers_of_several_rank_lists_from_one_encoder_pass_equal_each_alone():
    from linnaeus.eval.evaluate import _classifiers
    from linnaeus.eval.texts import local_texts

    model = create_model("linnaeus-tiny", seed=0).eval()
    calls = []
    encode = local_texts(model, "linnaeus-tiny")
    counted = lambda texts: calls.append(len(texts)) or encode(texts)  # noqa: E731
    groups = {"species": ["Pica hudsonia", "Corvus corax", "Corvus brachyrhynchos"], "genus": ["Pica", "Corvus"]}
    together = _classifiers(counted, groups, "single")
    assert calls == [5]  # one pass for both lists
    for rank, names in groups.items():
        alone = average_templates(encode, names, TEMPLATES["single"])
        torch.testing.assert_close(together[rank], alone, rtol=0, atol=1e-6)


def test_a_species_class_keeps_its_common_name_and_coarser_classes_drop_it():
    species, _ = ranks.rank_classes([PICA, PICA2, CORVUS, ROSA], "species")
    assert {c.species: c.common_name for c in species} == {
        "hudsonia": "black-billed magpie", "pica": "Eurasian magpie", "corax": None, "canina": "dog rose"}
    genera, _ = ranks.rank_classes([PICA, PICA2, CORVUS, ROSA], "genus")
    assert all(c.common_name is None and c.species is None for c in genera)


@pytest.mark.parametrize("text_type", [t.value for t in TextType])
def test_zero_shot_class_names_are_the_bioclip_captions_of_each_text_type(text_type):
    classes, _ = ranks.rank_classes([ROSA, PICA, PICA2, PICA], "species")
    names, fallbacks = class_names(classes, text_type)
    assert fallbacks == 0  # every row here has a common name
    assert [f"a photo of {n}." for n in names] == [c.caption(text_type) for c in classes]
    assert TEMPLATES["single"][0](names[0]) == PICA.caption(text_type)  # classes sort by lineage


def test_zero_shot_counts_a_fallback_only_for_rows_without_the_parts_and_the_report_says_so():
    from linnaeus.config import EvalConfig
    from linnaeus.eval.embed import EvalSet
    from linnaeus.eval.evaluate import zero_shot
    from linnaeus.eval.report import markdown
    from linnaeus.eval.texts import local_texts

    taxa = [PICA, PICA2, CORVUS, ROSA, PICA, CORVUS]
    data = EvalSet(torch.nn.functional.normalize(torch.randn(len(taxa), 64, generator=torch.Generator().manual_seed(0)),
                                                 dim=-1), taxa, [str(i) for i in range(len(taxa))], [None] * len(taxa))
    texts = local_texts(create_model("linnaeus-tiny", seed=0).eval(), "linnaeus-tiny")
    cfg = EvalConfig(model="m", data="d", output="o", tasks=["zeroshot"], templates="single")
    result = {"images": len(taxa), "skipped_images": 0, "zeroshot": zero_shot(texts, data, cfg)}
    assert result["zeroshot"]["names_fallen_back_to_taxonomic"] == 1  # Corvus corax has no common name
    assert result["zeroshot"]["text_type"] == "taxonomic_common"
    assert ("Zero-shot, m: 1 of 4 classes lack the parts of the taxonomic_common text type (no common name in "
            "the data), so their class text is the taxonomic name instead.") in markdown({"m": result}, cfg)
    scientific = cfg.model_copy(update={"text_type": TextType.SCIENTIFIC})
    result["zeroshot"] = zero_shot(texts, data, scientific)
    assert result["zeroshot"]["names_fallen_back_to_taxonomic"] == 0
    assert "Zero-shot, m:" not in markdown({"m": result}, scientific)
