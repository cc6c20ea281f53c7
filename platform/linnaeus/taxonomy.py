"""Taxa, their normalisation, and BioCLIP's five text types.

Notable:
- Identity is the full seven-rank lineage, never the leaf name: the genus *Morus* of mulberries
  (Plantae) and of gannets (Animalia) are two taxa. The common name is carried but not part of identity.
- Names are normalised as BioCLIP's corpus writes them: ranks capitalised, the species epithet in lower
  case, white space collapsed, placeholders ("", "unknown", "NA", ...) turned into missing values, and
  the kingdom synonyms Metazoa / Archaeplastida / Chloroplastida folded into Animalia / Plantae.
- Text types are rendered exactly as BioCLIP's released corpus (`make_wds.py`) renders them:
  "a photo of {name}." and "a photo of {name} with common name {common}.". A taxon offers only the
  types it can fill, so a sampler never draws "a photo of None.".
- Rows that were normalised once (corpus shards, label banks, ingest plans) become taxa through one
  constructor, `Taxon.from_row` (or `from_columns` for column lists), which does not normalise again.
- Which text type a training image gets is the text sources' business (`linnaeus.text`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
RankName = Literal["kingdom", "phylum", "class", "order", "family", "genus", "species"]
ROW_COLUMNS: tuple[str, ...] = (*RANKS, "common_name")  # a taxon as columns of a table

_MISSING = {"", "unknown", "na", "n/a", "nan", "none", "null", "-", "?", "incertae sedis"}
_KINGDOM_SYNONYMS = {"Metazoa": "Animalia", "Archaeplastida": "Plantae", "Chloroplastida": "Plantae"}
_SPACES = re.compile(r"\s+")
# Letters (any script), digits are not expected but tolerated inside names; control characters are not.
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class TextType(str, Enum):
    """BioCLIP's five caption kinds (names as in the paper)."""

    TAXONOMIC = "taxonomic"
    SCIENTIFIC = "scientific"
    COMMON = "common"
    SCIENTIFIC_COMMON = "scientific_common"
    TAXONOMIC_COMMON = "taxonomic_common"


ALL_TEXT_TYPES: tuple[TextType, ...] = tuple(TextType)
_NEEDS_COMMON = {TextType.COMMON, TextType.SCIENTIFIC_COMMON, TextType.TAXONOMIC_COMMON}


class TaxonomyError(ValueError):
    """A lineage that cannot be a taxon (names the field and value)."""


def clean_name(value: object) -> str | None:
    """Collapse white space; placeholders and non-strings become None."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas/CSV readers
        return None
    text = _SPACES.sub(" ", str(value)).strip()
    return None if text.lower() in _MISSING else text


def normalise_rank(rank: str, value: object) -> str | None:
    """Normalise one rank's value the way BioCLIP's corpus spells it."""
    text = clean_name(value)
    if text is None:
        return None
    if _BAD_CHARS.search(text):
        raise TaxonomyError(f"{rank}: control characters in {text!r}")
    if rank == "species":
        return text.lower()
    text = text[0].upper() + text[1:].lower() if text.isupper() or text.islower() else text
    if rank == "kingdom":
        text = _KINGDOM_SYNONYMS.get(text, text)
    return text


@dataclass(frozen=True, eq=False)
class Taxon:
    """Seven ranks and a common name; equality and hashing use the lineage only."""

    kingdom: str | None = None
    phylum: str | None = None
    class_: str | None = None
    order: str | None = None
    family: str | None = None
    genus: str | None = None
    species: str | None = None
    common_name: str | None = field(default=None)

    @classmethod
    def from_ranks(cls, ranks: Mapping[str, object], common_name: object = None) -> "Taxon":
        """Build a normalised taxon from a mapping rank -> raw value (missing keys are missing ranks).

        A species given as a binomial whose first word is the genus ("Pica hudsonia") keeps only the
        epithet. Raises TaxonomyError when nothing at all is known.
        """
        values = {rank: normalise_rank(rank, ranks.get(rank)) for rank in RANKS}
        genus, species = values["genus"], values["species"]
        if genus and species and species.startswith(genus.lower() + " "):
            values["species"] = species[len(genus) + 1:]
        if not any(values.values()):
            raise TaxonomyError("no rank is known (all of kingdom..species are empty)")
        if values["species"] and not values["genus"]:
            raise TaxonomyError(f"species {values['species']!r} given without a genus")
        common = clean_name(common_name)
        return cls(*(values[r] for r in RANKS), common_name=common)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Taxon":
        """A taxon from a row whose values were normalised already (the seven rank columns and
        `common_name`; empty strings and missing keys are missing values). No normalisation, no checks."""
        return cls(*(row.get(r) or None for r in RANKS), common_name=row.get("common_name") or None)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> list["Taxon"]:
        """`from_row` for every row of column lists (the rank columns and `common_name`)."""
        rows = len(columns[RANKS[0]])
        common = columns.get("common_name") or [None] * rows
        return [cls(*(columns[r][i] or None for r in RANKS), common_name=common[i] or None) for i in range(rows)]

    def truncated(self, rank: str) -> "Taxon | None":
        """The taxon cut at `rank`, or None when that rank is unknown. Cut at species it is the whole
        taxon, common name included (zero-shot's `taxonomic_common` names need it); above species the
        common name goes, since it names the species, not its genus or family."""
        depth = RANKS.index(rank) + 1
        if self.lineage[depth - 1] is None:
            return None
        return self if depth == len(RANKS) else Taxon(*self.lineage[:depth])

    @property
    def lineage(self) -> tuple[str | None, ...]:
        return (self.kingdom, self.phylum, self.class_, self.order, self.family, self.genus,
                self.species)

    def rank(self, name: str) -> str | None:
        return self.lineage[RANKS.index(name)]

    def as_dict(self) -> dict[str, str | None]:
        """Row form: the seven rank columns plus common_name."""
        return {**dict(zip(RANKS, self.lineage)), "common_name": self.common_name}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxon) and self.lineage == other.lineage

    def __hash__(self) -> int:
        return hash(self.lineage)

    @property
    def key(self) -> str:
        """A stable string id of the lineage (missing ranks kept as empty fields)."""
        return "|".join(part or "" for part in self.lineage)

    # --- names -------------------------------------------------------------------------------------
    def taxonomic_name(self) -> str:
        """The known ranks, space-joined: "Animalia Chordata Aves ... Pica hudsonia"."""
        return " ".join(v for v in self.lineage if v)

    def tagged_name(self) -> str:
        """Every known rank named: "kingdom Animalia phylum Chordata ... species hudsonia"."""
        return " ".join(f"{r} {v}" for r, v in zip(RANKS, self.lineage) if v)

    def scientific_name(self) -> str | None:
        """"Genus species", or "Genus" for a genus-level taxon; None above genus."""
        if not self.genus:
            return None
        return f"{self.genus} {self.species}" if self.species else self.genus

    def name(self, text_type: TextType | str) -> str | None:
        """The plain name in one text type, or None when this taxon cannot fill it."""
        text_type = TextType(text_type)
        if text_type in _NEEDS_COMMON and not self.common_name:
            return None
        if text_type is TextType.COMMON:
            return self.common_name
        if text_type in (TextType.SCIENTIFIC, TextType.SCIENTIFIC_COMMON):
            return self.scientific_name()
        return self.taxonomic_name()

    def available_text_types(self) -> tuple[TextType, ...]:
        return tuple(t for t in ALL_TEXT_TYPES if self.name(t) is not None)

    def caption(self, text_type: TextType | str) -> str | None:
        """The caption as BioCLIP's corpus renders it, or None when this taxon cannot fill the type."""
        text_type = TextType(text_type)
        name = self.name(text_type)
        if name is None:
            return None
        if text_type in (TextType.SCIENTIFIC_COMMON, TextType.TAXONOMIC_COMMON):
            return f"a photo of {name} with common name {self.common_name}."
        return f"a photo of {name}."


# --- parsing BioCLIP's own strings ----------------------------------------------------------------
_TAG = re.compile(r"\b(" + "|".join(RANKS) + r") ")


def parse_tagged(text: str, common_name: object = None) -> Taxon:
    """Parse BioCLIP's `taxonTag` form ("a photo of kingdom Animalia ... species tristis.").

    Only the tagged form says which rank each word is, so it is preferred over `taxonomic_name`.
    """
    body = clean_name(text) or ""
    if body.startswith("a photo of "):
        body = body[len("a photo of "):]
    body = body.split(" with common name ")[0].rstrip(".")
    parts = _TAG.split(body)
    if len(parts) < 3 or parts[0].strip():
        raise TaxonomyError(f"taxonTag: not a tagged lineage: {text!r}")
    ranks: dict[str, str] = {}
    for rank, value in zip(parts[1::2], parts[2::2]):
        if rank in ranks:
            raise TaxonomyError(f"taxonTag: rank {rank!r} appears twice in {text!r}")
        ranks[rank] = value
    return Taxon.from_ranks(ranks, common_name)


# --- sampling -------------------------------------------------------------------------------------
def stable_hash64(*parts: object) -> int:
    """A 63-bit hash that is the same in every process (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def text_type_counts(taxa: Iterable[Taxon]) -> dict[str, int]:
    """How many of the given taxa (or rows) can fill each text type."""
    counts = dict.fromkeys((t.value for t in ALL_TEXT_TYPES), 0)
    for taxon in taxa:
        for t in taxon.available_text_types():
            counts[t.value] += 1
    return counts


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """A numpy generator seeded from a stable hash of the key (per epoch, per shard, ...)."""
    return np.random.default_rng(stable_hash64(seed, *key))
