"""One model on one evaluation set: every task's figures, with the settings that produced them.

Notable:
- Classes are the distinct taxa of the evaluation set at `rank` (species by default); images unknown at
  that rank are left out of classification (counted). Zero-shot texts come from the class taxa in
  `text_type` through the chosen templates; per-rank accuracy is reported both ways (`ranks`).
- Retrieval uses each image's own caption where the data has one, otherwise its taxon's caption in
  `text_type` (so BioCLIP-style corpora without free text still get a figure).
- Text features (one per class or caption, through every template) come from a `texts` encoder: the
  driver's GPU, or model actors on the cluster's GPUs when the driver has none (`eval.texts`); image
  features from the Ray Data pipeline (`embed`). Scoring (zero-shot top-k, SimpleShot,
  retrieval, neighbours) runs on the same device, a memory-bounded block at a time (`search.top_k`): a
  million images against 10,000 species took one to two minutes per task and SimpleShot draw on two CPU
  cores (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses

import torch

from linnaeus.clip.templates import templates as template_set
from linnaeus.clip.towers import average_templates
from linnaeus.config import EvalConfig
from linnaeus.eval import fewshot, hierarchy, ranks, retrieval, zeroshot
from linnaeus.eval.embed import EvalSet
from linnaeus.eval.texts import TextEncoder, local_texts
from linnaeus.taxonomy import RANKS, TextType
from linnaeus.text.taxonomic import class_names


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _classifiers(texts: TextEncoder, names: dict[str, list[str]], templates: str) -> dict[str, torch.Tensor]:
    """[D, C] weights per list of class names, from one pass of the encoder over all of them (through
    model actors each pass is a Ray Data run with its own start-up: one for all ranks, not one per rank)."""
    everything = [n for group in names.values() for n in group]
    weights = average_templates(texts, everything, template_set(templates)).float()
    return dict(zip(names, weights.split([len(g) for g in names.values()], dim=1)))


def zero_shot(texts: TextEncoder, data: EvalSet, cfg: EvalConfig) -> dict:
    classes, labels = ranks.rank_classes(data.taxa, cfg.rank)
    names, fallbacks = class_names(classes, cfg.text_type)
    direct = {rank: ranks.rank_classes(data.taxa, rank) for rank in RANKS[: RANKS.index(cfg.rank) + 1]}
    weights = _classifiers(texts, {"": names, **{rank: [c.taxonomic_name() for c in rank_classes]
                                                 for rank, (rank_classes, _) in direct.items()
                                                 if len(rank_classes) >= 2}}, cfg.templates)
    top = _top(data, labels, weights[""])
    known = labels >= 0
    out = {"classes": len(classes), "images": int(known.sum()), "text_type": TextType(cfg.text_type).value,
           "names_fallen_back_to_taxonomic": fallbacks,
           **zeroshot.accuracy_from_top(top, labels[known])}
    predicted = [classes[i] for i in top[:, 0].tolist()]
    truth = [t for t, k in zip(data.taxa, known.tolist()) if k]
    out["per_rank_via_prediction"] = ranks.via_species(predicted, truth)
    out["per_rank_direct"] = {rank: _direct(data, len(rank_classes), rank_labels, weights.get(rank))
                              for rank, (rank_classes, rank_labels) in direct.items()}
    return out


def _direct(data: EvalSet, classes: int, labels: torch.Tensor, weights: torch.Tensor | None) -> dict:
    if weights is None:
        return {"classes": classes, "note": "one class: nothing to classify"}
    return {"classes": classes, **zeroshot.accuracy_from_top(_top(data, labels, weights), labels[labels >= 0])}


def _top(data: EvalSet, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Top-5 classes of the images whose label is known (>= 0)."""
    return zeroshot.top_classes(data.features[(labels >= 0).to(data.features.device)], weights)


def few_shot(data: EvalSet, cfg: EvalConfig) -> dict:
    _, labels = ranks.rank_classes(data.taxa, cfg.rank)
    known = labels >= 0
    out = {}
    for k in cfg.shots:
        try:
            features = data.features[known.to(data.features.device)]
            out[f"{k}-shot"] = fewshot.simpleshot(features, labels[known], k, cfg.seeds)
        except ValueError as exc:
            out[f"{k}-shot"] = {"k": k, "note": str(exc)}
    return out


def retrieval_recall(texts: TextEncoder, data: EvalSet, cfg: EvalConfig) -> dict:
    captions = [c or t.caption(cfg.text_type) or t.caption("taxonomic") for c, t in zip(data.captions, data.taxa)]
    distinct = sorted(set(captions))
    index = {c: i for i, c in enumerate(distinct)}
    text_features = texts(distinct)
    return {"texts": len(distinct), "own_captions": sum(c is not None for c in data.captions),
            **retrieval.recall_at_k(data.features, text_features, torch.tensor([index[c] for c in captions]),
                                    device=data.features.device)}


def evaluate(model, arch: str, data: EvalSet, cfg: EvalConfig,
             texts: TextEncoder | None = None) -> tuple[dict, dict[str, bytes]]:
    """Figures for every task in `cfg.tasks`, and the PNGs (name -> bytes). Texts go through `texts`
    (`linnaeus.eval.texts`), by default `model` on the driver's device."""
    model = model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    texts = texts or local_texts(model, arch)
    data = dataclasses.replace(data, features=data.features.to(_device(model)))
    results: dict = {"images": len(data.taxa), "skipped_images": len(data.skipped),
                     "image_precision": data.precision}
    pngs: dict[str, bytes] = {}
    if "zeroshot" in cfg.tasks:
        results["zeroshot"] = zero_shot(texts, data, cfg)
    if "fewshot" in cfg.tasks:
        results["fewshot"] = few_shot(data, cfg)
    if "retrieval" in cfg.tasks:
        results["retrieval"] = retrieval_recall(texts, data, cfg)
    if "hierarchy" in cfg.tasks:
        features, taxa = hierarchy.sample(data.features, data.taxa, cfg.hierarchy_images, seed=0)
        results["hierarchy"] = hierarchy.knn_agreement(features, taxa, k=cfg.knn, seed=0)
        results["hierarchy"]["images_sampled"] = len(taxa)
        pngs["embedding_map"] = hierarchy.pca_map_png(features, taxa, cfg.map_rank, arch)
    return results, pngs

