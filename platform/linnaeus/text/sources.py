"""Text sources and the sampler that draws a caption for each image from one of them.

Notable:
- A source declares the corpus columns it reads (`columns`, so the stream projects only those) and the
  caption kinds it offers (`kinds`). It turns a batch of rows into items once (`items`: the taxonomic
  source builds a Taxon per row) and captions an item in a kind, or says it cannot (`caption` -> None).
- The sampler draws a kind uniformly among the allowed kinds the item can fill, so mixing never draws
  what a row cannot fill ("a photo of None."). With PER_BATCH mixing the batch draws one kind, and an
  item that cannot fill it falls back to its own per-item draw.
- Draws are a pure function of (seed, epoch, image key): the caption an image gets does not depend on
  which worker or batch it lands in, so runs are reproducible on any cluster shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Mapping, Sequence

from linnaeus.registry import Registry
from linnaeus.taxonomy import stable_hash64


class TextSource:
    """A registered caption source. Subclasses set `columns` and `kinds` and implement `items`, `caption`."""

    key: ClassVar[str]
    columns: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ()

    def items(self, columns: Mapping[str, Sequence[Any]]) -> list[Any]:
        """One item per row from the source's columns (lists of equal length)."""
        raise NotImplementedError

    def caption(self, item: Any, kind: str) -> str | None:
        """The caption of `item` in `kind`, or None when the item cannot fill that kind."""
        raise NotImplementedError

    def fills(self, item: Any, kind: str) -> bool:
        return self.caption(item, kind) is not None

    def check_kinds(self, kinds: Sequence[str], field: str = "text_types") -> tuple[str, ...]:
        """`kinds` as this source's kinds, or a ValueError naming the field, the kind and the known ones."""
        unknown = [k for k in kinds if k not in self.kinds]
        if unknown:
            raise ValueError(f"{field}: {unknown} are not kinds of the {self.key!r} text source "
                             f"(it offers {list(self.kinds)})")
        return tuple(kinds)


TEXT_SOURCES: Registry[TextSource] = Registry("text source")


def make_source(name: str, field: str = "text_source") -> TextSource:
    return TEXT_SOURCES.get(name, field)()


class Mixing(str, Enum):
    PER_IMAGE = "per_image"  # BioCLIP's paper: every image draws its own type
    PER_BATCH = "per_batch"  # BioCLIP's released code: one type for a whole batch


@dataclass(frozen=True)
class TextSampler:
    """Draws a caption kind for each item among the allowed kinds it can fill, and renders it."""

    source: TextSource
    kinds: Sequence[str]
    mixing: Mixing = Mixing.PER_IMAGE
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("text_types: at least one kind is needed")
        object.__setattr__(self, "kinds", self.source.check_kinds([str(getattr(k, "value", k))
                                                                   for k in self.kinds]))
        object.__setattr__(self, "mixing", Mixing(self.mixing))

    def _pick(self, options: Sequence[str], *key: object) -> str:
        return options[stable_hash64(self.seed, *key) % len(options)]

    def draw(self, item: Any, image_key: object, epoch: int = 0) -> str | None:
        """The kind for one image; None when the item fills none of the allowed kinds."""
        options = [k for k in self.kinds if self.source.fills(item, k)]
        return self._pick(options, epoch, image_key) if options else None

    def draw_batch(self, items: Sequence[Any], image_keys: Sequence[object], epoch: int = 0
                   ) -> list[str | None]:
        if self.mixing is Mixing.PER_IMAGE or not items:
            return [self.draw(item, key, epoch) for item, key in zip(items, image_keys)]
        batch_kind = self._pick(self.kinds, epoch, "batch", min(map(str, image_keys)))
        return [batch_kind if self.source.fills(item, batch_kind) else self.draw(item, key, epoch)
                for item, key in zip(items, image_keys)]

    def captions(self, items: Sequence[Any], image_keys: Sequence[object], epoch: int = 0) -> list[str | None]:
        kinds = self.draw_batch(items, image_keys, epoch)
        return [self.source.caption(item, k) if k else None for item, k in zip(items, kinds)]

    def captions_of_rows(self, columns: Mapping[str, Sequence[Any]], image_keys: Sequence[object],
                         epoch: int = 0) -> list[str | None]:
        """Captions straight from column lists (the source's columns)."""
        return self.captions(self.source.items(columns), image_keys, epoch)
