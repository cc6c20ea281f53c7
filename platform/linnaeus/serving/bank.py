"""A label bank: every taxon a model can name, with one text embedding each, stored next to the model.

Notable:
- Layout: a folder (or s3:// prefix) with Parquet parts (the seven ranks, `common_name`, `embedding`)
  and `_bank.json` (model digest, architecture, text types, templates, counts) written last: no
  `_bank.json`, no bank. A bank built for other weights is refused by the Predictor (digest check).
- A taxon's embedding is its class embedding in each chosen text type (templates averaged, as zero-shot
  classification does), averaged over the types and normalised again.
- `subset(names)` restricts predictions to taxa matching any name at any rank, a scientific name or a
  common name (a region's species list, a family); a name that matches nothing is an error naming it.
- `groups(rank)` maps every entry to its lineage truncated at a rank, so probabilities over the leaves
  can be summed up the tree.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from linnaeus import storage
from linnaeus.clip.templates import templates as template_set
from linnaeus.clip.towers import classifier
from linnaeus.taxonomy import RANKS, ROW_COLUMNS, Taxon
from linnaeus.text.taxonomic import class_names

META_NAME = "_bank.json"
DEFAULT_DIR = "label_bank"


class BankError(ValueError):
    """A bank that cannot be read or used (names the URI or the offending names)."""


@dataclass
class LabelBank:
    taxa: list[Taxon]
    embeddings: torch.Tensor  # [N, D] float32, L2-normalised rows
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.taxa) != len(self.embeddings):
            raise BankError(f"{len(self.taxa)} taxa but {len(self.embeddings)} embeddings")
        if not self.taxa:
            raise BankError("a label bank needs at least one taxon")

    def __len__(self) -> int:
        return len(self.taxa)

    def subset(self, names: Sequence[str]) -> torch.Tensor:
        """Indices of the entries matching any of `names` (case-insensitive, at any rank)."""
        index = self._name_index
        unknown = [n for n in names if n.strip().lower() not in index]
        if unknown:
            raise BankError(f"subset: {unknown[:10]} match no taxon in the label bank"
                            + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""))
        picked = sorted({i for n in names for i in index[n.strip().lower()]})
        return torch.tensor(picked, dtype=torch.long)

    @functools.cached_property
    def _name_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        for i, taxon in enumerate(self.taxa):
            # Every rank but the bare species epithet ("alba" would pick every X alba): species go by
            # their scientific name.
            names = {*filter(None, taxon.lineage[:-1]), taxon.scientific_name(), taxon.common_name}
            for name in filter(None, names):
                index.setdefault(name.lower(), []).append(i)
        return index

    def groups(self, rank: str) -> tuple[torch.Tensor, list[Taxon]]:
        """Each entry's group at `rank` (-1 when unknown there) and the groups' truncated lineages."""
        if rank not in RANKS:
            raise BankError(f"rank {rank!r} is not one of {list(RANKS)}")
        if rank not in self._groups:
            self._groups[rank] = self._group(rank)
        return self._groups[rank]

    @functools.cached_property
    def _groups(self) -> dict:
        return {}

    def _group(self, rank: str) -> tuple[torch.Tensor, list[Taxon]]:
        groups: dict[Taxon, int] = {}  # a taxon's identity is its lineage: the first entry names a group
        of_entry = []
        for taxon in self.taxa:
            cut = taxon.truncated(rank)
            of_entry.append(-1 if cut is None else groups.setdefault(cut, len(groups)))
        return torch.tensor(of_entry, dtype=torch.long), list(groups)

    # --- storage ---------------------------------------------------------------------------------
    def save(self, uri: str, s3: storage.S3Options | None = None) -> storage.Location:
        out = storage.resolve(uri, s3)
        storage.ensure_bucket(out)
        buf = io.BytesIO()
        pq.write_table(to_table(self.taxa, self.embeddings.numpy()), buf, compression="zstd")
        storage.write_bytes(out.join("part-00000.parquet"), buf.getvalue())
        write_meta(out, {**self.meta, "taxa": len(self.taxa)})
        return out

    @classmethod
    def load(cls, uri: str, s3: storage.S3Options | None = None) -> "LabelBank":
        meta = read_meta(uri, s3)
        table = _read_parts(storage.resolve(uri, s3))
        taxa = _taxa(table)
        dim = meta["dim"]
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        return cls(taxa, torch.from_numpy(flat.reshape(-1, dim).astype(np.float32)), meta)


@torch.no_grad()
def taxa_embeddings(model, tokenizer, taxa: Sequence[Taxon], text_types: Sequence[str],
                    templates: str, device: str | torch.device = "cpu") -> torch.Tensor:
    """[N, D]: per taxon, its zero-shot class embedding in each text type, averaged and normalised."""
    total = None
    for text_type in text_types:
        names, _ = class_names(taxa, text_type)
        weights = classifier(model, tokenizer, names, template_set(templates), torch.device(device)).T
        total = weights if total is None else total + weights
    return F.normalize(total.float(), dim=-1).cpu()


def read_meta(uri: str, s3: storage.S3Options | None = None) -> dict:
    meta_loc = storage.resolve(uri, s3).join(META_NAME)
    if not storage.exists(meta_loc):
        raise BankError(f"{storage.resolve(uri, s3).uri}: not a label bank ({META_NAME} is missing; "
                        "build one with jobs/build_label_bank.py)")
    return json.loads(storage.read_bytes(meta_loc))


def load_taxa(uri: str, s3: storage.S3Options | None = None) -> list[Taxon]:
    """Only the taxa of a bank (no embeddings): enough to check subset names before a job starts."""
    read_meta(uri, s3)  # no _bank.json, no bank
    return _taxa(_read_parts(storage.resolve(uri, s3), list(ROW_COLUMNS)))


def _read_parts(root: storage.Location, columns: list[str] | None = None) -> pa.Table:
    parts = sorted(f.path for f in storage.list_files(root) if f.path.endswith(".parquet"))
    tables = [pq.read_table(p, filesystem=root.fs, columns=columns) for p in parts]
    return pa.concat_tables(tables, promote_options="default")  # older parts may have null-typed columns


def _taxa(table: pa.Table) -> list[Taxon]:
    return Taxon.from_columns(table.select(list(ROW_COLUMNS)).to_pydict())


def to_table(taxa: Sequence[Taxon], embeddings: np.ndarray) -> pa.Table:
    dim = embeddings.shape[1]
    # Explicit string types: a part whose taxa all lack a common name must not get a null-typed column.
    columns = {r: pa.array([t.rank(r) for t in taxa], pa.string()) for r in RANKS}
    columns["common_name"] = pa.array([t.common_name for t in taxa], pa.string())
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, dim)
    return pa.table(columns)


def write_meta(root: storage.Location, meta: dict) -> None:
    storage.write_bytes(root.join(META_NAME), json.dumps(meta, indent=1).encode())


def default_location(model_uri: str) -> str:
    return storage.resolve(model_uri).join(DEFAULT_DIR).uri
