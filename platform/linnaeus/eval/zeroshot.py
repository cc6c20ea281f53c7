"""Zero-shot classification the CLIP way: class names in a text type, through templates, averaged.

Notable:
- A class's text is its taxon's name in the chosen BioCLIP text type (`taxonomic`, `scientific`,
  `common`, `scientific_common` = "Pica hudsonia with common name black-billed magpie", ...: the
  training caption without "a photo of ... ."), put through every template; the normalised
  embeddings are averaged and normalised again, exactly as open_clip's `build_zero_shot_classifier`
  does (a test checks equality).
- Templates: `openai` (the 80 ImageNet templates of the CLIP paper, open_clip's list) or `single`
  ("a photo of {}.", the form of BioCLIP's training captions).
- A taxon lacking the parts of the chosen type (no common name, say) falls back to its taxonomic name;
  the caller gets the count so reports can say so.
- Plain torch; the model is any open_clip CLIP.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from linnaeus.eval import search
from linnaeus.taxonomy import Taxon, TextType

TEMPLATES: dict[str, tuple[Callable[[str], str], ...]] = {
    "openai": tuple(OPENAI_IMAGENET_TEMPLATES),
    "single": (lambda c: f"a photo of {c}.",),
}


def class_names(taxa: Sequence[Taxon], text_type: TextType | str) -> tuple[list[str], int]:
    """Each taxon's name in `text_type` (taxonomic where it lacks the parts); and how many fell back."""
    names, fallbacks = [], 0
    for taxon in taxa:
        caption = taxon.caption(text_type)
        if caption is None:
            caption, fallbacks = taxon.caption(TextType.TAXONOMIC), fallbacks + 1
        names.append(caption.removeprefix("a photo of ").removesuffix("."))
    return names, fallbacks


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device: str | torch.device = "cpu",
                 texts_per_batch: int = 1024) -> torch.Tensor:
    """[N, D] normalised float32 text features on `device`, texts as given, a batch at a time."""
    return torch.cat([F.normalize(model.encode_text(tokenizer(list(texts[i:i + texts_per_batch])).to(device))
                                  .float(), dim=-1) for i in range(0, len(texts), texts_per_batch)])


@torch.no_grad()
def classifier(model, tokenizer, names: Sequence[str], templates: Sequence[Callable[[str], str]],
               device: str | torch.device = "cpu", texts_per_batch: int = 1024) -> torch.Tensor:
    """The [D, C] zero-shot weights: per class, the normalised mean of its normalised template embeddings."""
    return average_templates(lambda texts: encode_texts(model, tokenizer, texts, device, texts_per_batch),
                             names, templates, texts_per_batch)


def average_templates(encode: Callable[[list[str]], torch.Tensor], names: Sequence[str],
                      templates: Sequence[Callable[[str], str]], texts_per_call: int = 1 << 18) -> torch.Tensor:
    """[D, C] weights from any text encoder (texts -> [N, D] normalised), at most `texts_per_call` texts
    per call (a call may be a whole Ray Data job: few and large is the aim)."""
    per_call = max(1, texts_per_call // len(templates))
    columns = []
    for start in range(0, len(names), per_call):
        chunk = names[start:start + per_call]
        embedded = encode([t(name) for name in chunk for t in templates])
        columns.append(F.normalize(embedded.reshape(len(chunk), len(templates), -1).mean(dim=1), dim=-1))
    return torch.cat(columns).T


def top_classes(features: torch.Tensor, weights: torch.Tensor, k: int = 5, chunk: int = 16384) -> torch.Tensor:
    """[N, k] best classes per image (`weights` is [D, classes]), a bounded block of images at a time."""
    return search.top_k(features, weights.T, k, chunk)


def accuracy_from_top(top: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    return {f"top{k}": float((top[:, :k] == labels[:, None]).any(dim=1).float().mean()) for k in ks}
