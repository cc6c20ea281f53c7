"""The Predictor: an exported model behind the questions users ask of it, in plain torch.

Notable:
- Preprocessing is split where it is cheapest to ship: `pixels(image)` runs open_clip's own eval
  resize and centre crop on the CPU and returns uint8 [3, S, S] (a quarter of the float tensor's bytes);
  `encode_pixels` scales and normalises on the model's device. Together they equal open_clip's transform.
- Texts go through the model's own text tower and its tokenizer (open_clip's, or the one the export
  names: `linnaeus.clip.text_towers`).
- On CUDA the image and text towers run under bf16 autocast; features come back float32, normalised.
  With `cuda_graphs=N` the image tower is replayed from captured CUDA graphs (`serving.graphs`).
- Free-text labels go through templates (`openai`: the 80 CLIP templates, `single`, or `none` for the
  text as given) and are cached per (model digest, text, templates) in an LRU.
- Taxonomy: softmax over the bank's taxa (all, or a subset) at the model's learned temperature, then
  probabilities summed up the tree to the asked rank, as pybioclip does. Mass on taxa unknown at that
  rank (a genus-level entry asked for species) is not given to any answer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from linnaeus import storage
from linnaeus.clip import towers
from linnaeus.clip.exports import read_export
from linnaeus.clip.preprocess import eval_crop, norm_stats, to_pixels
from linnaeus.clip.templates import templates as template_set
from linnaeus.clip.text_towers import model_tokenizer
from linnaeus.serving.bank import BankError, LabelBank, default_location
from linnaeus.serving.labels import LabelCache
from linnaeus.taxonomy import RANKS, Taxon


class Predictor:
    def __init__(self, model: str, bank: str | None = None, device: str | None = None,
                 cache_size: int = 100_000, s3: storage.S3Options | None = None, cuda_graphs: int = 0,
                 load_bank: bool = True):
        """`cuda_graphs`: on CUDA, capture the image tower for batches up to this size (0: eager).
        `load_bank=False` leaves the bank to `attach_bank` (the service loads it apart, and retries)."""
        export = read_export(model, s3)
        self.model_uri, self.arch, self.model_id = export.uri, export.arch, export.digest
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = export.build().to(self.device).eval()
        self.tokenizer = model_tokenizer(self.model, self.arch)
        cfg = self.preprocess_cfg = dict(self.model.visual.preprocess_cfg)
        self._crop = eval_crop(cfg)
        self.image_size = tuple(cfg["size"])
        self._mean, self._std = norm_stats(cfg, self.device)
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        self.cache = LabelCache(cache_size)
        self.bank = self._load_bank(bank, s3) if load_bank else None
        self._graphed = None
        if cuda_graphs and self.device.type == "cuda":
            from linnaeus.serving.graphs import GraphedImageEncoder

            self._graphed = GraphedImageEncoder(self.model, self.image_size, self._mean, self._std, cuda_graphs)

    def attach_bank(self, uri: str | None, s3: storage.S3Options | None = None) -> None:
        """Load the label bank (`uri`, or the one beside the model when there is one); raises
        `StorageError` when its store cannot be read and `BankError` when it does not fit the model."""
        self.bank = self._load_bank(uri, s3)

    def _load_bank(self, uri: str | None, s3) -> LabelBank | None:
        if uri is None:
            candidate = default_location(self.model_uri)
            if not storage.exists(storage.resolve(candidate, s3).join("_bank.json")):
                return None
            uri = candidate
        bank = LabelBank.load(uri, s3)
        if bank.meta.get("model_digest") != self.model_id:
            raise BankError(f"{uri}: built for model {bank.meta.get('model_digest')}, not for "
                            f"{self.model_uri} ({self.model_id}); rebuild it with jobs/build_label_bank.py")
        bank.embeddings = bank.embeddings.to(self.device)
        return bank

    # --- embeddings ------------------------------------------------------------------------------
    def pixels(self, image: Image.Image) -> torch.Tensor:
        """An RGB image -> uint8 [3, S, S] after the model's eval resize and centre crop."""
        return to_pixels(image, self._crop)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> normalised float32 features [B, D] on the CPU."""
        if self._graphed is not None:
            return self._graphed(pixels)
        return towers.encode_pixels(self.model, pixels, self._mean, self._std)

    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Normalised float32 image features [N, D] of RGB images."""
        return self.encode_pixels(torch.stack([self.pixels(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised float32 text features [N, D], texts as given (no templates)."""
        return towers.encode_texts(self.model, self.tokenizer, texts, self.device)

    def label_embeddings(self, labels: Sequence[str], templates: str = "openai") -> torch.Tensor:
        """[L, D] template-averaged label embeddings, through the LRU cache."""
        chosen = template_set(templates)

        def compute(missing: list[int]) -> torch.Tensor:
            weights = towers.classifier(self.model, self.tokenizer, [labels[i] for i in missing], chosen, self.device)
            return weights.T.float()

        return self.cache.get_or_compute([(self.model_id, templates, label) for label in labels], compute)

    # --- questions -------------------------------------------------------------------------------
    def classify_features(self, features: torch.Tensor, labels: Sequence[str], k: int = 5,
                          templates: str = "openai") -> list[list[dict]]:
        """Per image, the top-k labels with softmax probabilities over all `labels`."""
        weights = self.label_embeddings(labels, templates)
        probs = (self.logit_scale * features.float() @ weights.T).softmax(dim=-1)
        top = probs.topk(min(k, len(labels)), dim=-1)
        return [[{"label": labels[j], "probability": float(p)} for p, j in zip(ps.tolist(), js.tolist())]
                for ps, js in zip(top.values, top.indices)]

    def predict_features(self, features: torch.Tensor, rank: str = "species", k: int = 5,
                         subset: Sequence[str] | None = None) -> list[list[dict]]:
        """Per image, the top-k taxa at `rank` with probabilities summed up from the bank's leaves."""
        bank = self._require_bank()
        of_entry, groups = bank.groups(rank)
        embeddings, target = bank.embeddings, of_entry
        if subset:  # only a subset gathers rows: the whole bank (450k taxa: 900 MB) is never copied per request
            rows = bank.subset(subset)
            embeddings, target = embeddings[rows.to(embeddings.device)], target[rows]
        probs = (self.logit_scale * features.to(embeddings.device).float() @ embeddings.T).softmax(dim=-1)
        target = target.to(probs.device)
        known = target >= 0
        if not known.any():
            raise BankError(f"rank {rank!r}: no taxon in the label bank{' subset' if subset else ''} "
                            "is known at that rank")
        summed = torch.zeros(len(features), len(groups), device=probs.device)
        summed.index_add_(1, target[known], probs[:, known])
        present = torch.zeros(len(groups), dtype=torch.bool, device=probs.device)
        present[target[known]] = True
        summed[:, ~present] = -1.0  # groups outside the subset are never answers, even at p = 0
        top = summed.topk(min(k, int(present.sum())), dim=-1)
        return [[_answer(groups[j], rank, float(p)) for p, j in zip(ps.tolist(), js.tolist())]
                for ps, js in zip(top.values.cpu(), top.indices.cpu())]

    def classify(self, images: Sequence[Image.Image], labels: Sequence[str], k: int = 5,
                 templates: str = "openai") -> list[list[dict]]:
        return self.classify_features(self.image_features(images), labels, k, templates)

    def predict(self, images: Sequence[Image.Image], rank: str = "species", k: int = 5,
                subset: Sequence[str] | None = None) -> list[list[dict]]:
        return self.predict_features(self.image_features(images), rank, k, subset)

    def _require_bank(self) -> LabelBank:
        if self.bank is None:
            raise BankError(f"{self.model_uri}: no label bank (build one with jobs/build_label_bank.py "
                            f"--model {self.model_uri})")
        return self.bank


def _answer(taxon: Taxon, rank: str, probability: float) -> dict:
    depth = RANKS.index(rank) + 1
    name = taxon.scientific_name() if rank == "species" else taxon.rank(rank)
    return {"rank": rank, "name": name, "common_name": taxon.common_name,
            "lineage": dict(zip(RANKS[:depth], taxon.lineage[:depth])), "probability": probability}
