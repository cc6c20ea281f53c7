"""Evaluation's text side on CUDA (bf16): the zero-shot classifier and caption features match the CPU's."""

from __future__ import annotations

import pytest
import torch

from linnaeus.clip.models import create_model, tokenizer
from linnaeus.clip.templates import TEMPLATES
from linnaeus.clip.towers import classifier
from linnaeus.eval import evaluate as ev
from linnaeus.eval.texts import local_texts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_text_features_on_the_gpu_match_the_cpu_within_bf16_precision():
    names = ["Pica hudsonia", "Corvus corax", "Animalia Chordata Aves", "black-billed magpie"]
    cpu = create_model("linnaeus-tiny", seed=0).eval()
    reference = classifier(cpu, tokenizer("linnaeus-tiny", 77), names, TEMPLATES["openai"], torch.device("cpu"))
    captions = local_texts(cpu, "linnaeus-tiny")(names)
    gpu = local_texts(create_model("linnaeus-tiny", seed=0).eval().to("cuda"), "linnaeus-tiny")
    weights = ev._classifiers(gpu, {"c": names}, "openai")["c"]
    assert weights.device.type == "cpu" and weights.shape == reference.shape
    torch.testing.assert_close(weights, reference, rtol=0, atol=3e-2)
    torch.testing.assert_close(gpu(names), captions, rtol=0, atol=3e-2)
    assert (weights.T @ reference).diagonal().min() > 0.99  # same directions


def test_scoring_on_the_gpu_gives_the_cpu_figures():
    from linnaeus.config import EvalConfig
    from linnaeus.eval.embed import EvalSet
    from linnaeus.taxonomy import Taxon

    species = [Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", g, s)
               for g in ("Pica", "Corvus") for s in ("a", "b", "c")]
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(len(species), 16, generator=g)
    taxa = [species[i % len(species)] for i in range(120)]
    features = torch.nn.functional.normalize(
        torch.stack([centres[i % len(species)] for i in range(120)]) + 0.8 * torch.randn(120, 16, generator=g), dim=-1)
    data = EvalSet(features, taxa, [str(i) for i in range(120)], [None] * 120)
    cfg = EvalConfig(model="arch:linnaeus-tiny", data="/d", output="/o", tasks=["fewshot", "hierarchy"])
    model = create_model("linnaeus-tiny", seed=0)
    on_gpu, _ = ev.evaluate(model, "linnaeus-tiny", data, cfg)
    assert next(model.parameters()).is_cuda
    scores = {k: ev.fewshot.simpleshot(features, torch.tensor([species.index(t) for t in taxa]), k, 5)
              for k in (1, 5)}
    for k in (1, 5):
        assert on_gpu["fewshot"][f"{k}-shot"]["per_seed"] == pytest.approx(scores[k]["per_seed"], abs=1 / 100)
    cpu_hierarchy = ev.hierarchy.knn_agreement(features, taxa, k=cfg.knn, seed=0)
    assert on_gpu["hierarchy"]["species"]["agreement"] == pytest.approx(cpu_hierarchy["species"]["agreement"])


def test_image_features_from_the_gpu_pipeline_match_the_cpu_loop_within_bf16(ray_local, ingest_synthetic):
    import pyarrow.parquet as pq

    from linnaeus.eval.embed import embed_dataset, embed_local

    assert ray_local.cluster_resources().get("GPU", 0) >= 1
    corpus = ingest_synthetic(40)
    model = create_model("linnaeus-tiny", seed=0)
    data = embed_dataset(str(corpus), "arch:linnaeus-tiny", model.visual.preprocess_cfg, batch_size=32)
    rows = {r["image_id"]: r for shard in sorted(corpus.glob("part-*.parquet"))
            for r in pq.read_table(shard).to_pylist()}
    expected = embed_local([rows[i] for i in data.image_ids], model)
    assert len(data.image_ids) == len(rows) and not data.skipped
    assert (data.features * expected).sum(-1).min() > 0.99  # unit vectors pointing the same way


def test_texts_sent_to_gpu_actors_come_back_in_order_and_match_the_cpu(ray_local):
    from linnaeus.eval.texts import cluster_texts

    names = [f"Corvus species {i}" for i in range(2500)]  # several actor batches
    reference = local_texts(create_model("linnaeus-tiny", seed=0).eval(), "linnaeus-tiny")(names)
    got = cluster_texts("arch:linnaeus-tiny", "linnaeus-tiny", actors=1, gpus_each=1.0)(names)
    assert got.shape == reference.shape
    assert (got * reference).sum(-1).min() > 0.99
