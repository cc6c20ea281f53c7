"""BioCLIP's five taxonomic text types as a text source, and the class names zero-shot uses.

Notable:
- Captions are rendered exactly as BioCLIP's released corpus renders them (`Taxon.caption`): "a photo
  of {name}." and "a photo of {name} with common name {common}."; a taxon offers only the types it can
  fill (no common name, no `common` caption).
- A zero-shot class name is the caption without "a photo of ... .", so a class reads like the captions
  the model was trained on; a taxon lacking the parts of the asked type falls back to its taxonomic
  name, and the count is returned so that reports can say so.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from linnaeus.taxonomy import ALL_TEXT_TYPES, RANKS, Taxon, TextType
from linnaeus.text.sources import TEXT_SOURCES, TextSource


@TEXT_SOURCES.register("taxonomic")
class TaxonomicSource(TextSource):
    columns = (*RANKS, "common_name")
    kinds = tuple(t.value for t in ALL_TEXT_TYPES)

    def items(self, columns: Mapping[str, Sequence[Any]]) -> list[Taxon]:
        return Taxon.from_columns(columns)

    def caption(self, item: Taxon, kind: str) -> str | None:
        return item.caption(kind)

    def fills(self, item: Taxon, kind: str) -> bool:
        return item.name(kind) is not None


def class_names(taxa: Sequence[Taxon], text_type: TextType | str) -> tuple[list[str], int]:
    """Each taxon's name in `text_type` (taxonomic where it lacks the parts); and how many fell back."""
    names, fallbacks = [], 0
    for taxon in taxa:
        caption = taxon.caption(text_type)
        if caption is None:
            caption, fallbacks = taxon.caption(TextType.TAXONOMIC), fallbacks + 1
        names.append(caption.removeprefix("a photo of ").removesuffix("."))
    return names, fallbacks
