"""The taxa a label bank should hold, read from corpora, folder datasets or taxa CSVs.

Notable:
- A corpus gives its distinct lineages from the rank columns alone (column projection, one shard at a
  time), so a 10M-row corpus costs a scan of eight short string columns, never its images.
- A taxa CSV needs `kingdom..species` (and may have `common_name`); a folder dataset's `taxa.csv` is one.
  A bad row is an error naming the file and line, not a silently missing taxon.
- Duplicates (same lineage) collapse to one entry; the first common name seen wins.
"""

from __future__ import annotations

from typing import Iterable

import pyarrow.parquet as pq

from linnaeus import storage
from linnaeus.data import inputs, shards
from linnaeus.taxonomy import RANKS, ROW_COLUMNS, Taxon, TaxonomyError


class TaxaError(ValueError):
    """Taxa that cannot be read (names the URI and line)."""


def read_taxa(uris: Iterable[str], s3: storage.S3Options | None = None) -> list[Taxon]:
    seen: dict[Taxon, Taxon] = {}
    for uri in uris:
        for taxon in _read_one(storage.resolve(uri, s3)):
            seen.setdefault(taxon, taxon)
    if not seen:
        raise TaxaError("no taxa found in the given inputs")
    return list(seen.values())


def _read_one(loc: storage.Location) -> list[Taxon]:
    if loc.path.endswith(".csv"):
        return _from_csv(loc)
    if storage.exists(loc.join(shards.MANIFEST_NAME)):
        return _from_corpus(loc)
    if storage.exists(loc.join(inputs.TAXA_CSV)):
        return _from_csv(loc.join(inputs.TAXA_CSV))
    raise TaxaError(f"{loc.uri}: neither a taxa CSV, a corpus ({shards.MANIFEST_NAME}) nor a folder dataset "
                    f"({inputs.TAXA_CSV})")


def _from_corpus(root: storage.Location) -> list[Taxon]:
    manifest = shards.read_manifest(root)
    out: dict[Taxon, Taxon] = {}
    for entry in manifest.shards:
        table = pq.read_table(manifest.shard_location(root, entry).path, filesystem=root.fs,
                              columns=list(ROW_COLUMNS))
        distinct = table.group_by(list(ROW_COLUMNS), use_threads=False).aggregate([])
        for taxon in Taxon.from_columns(distinct.to_pydict()):
            out.setdefault(taxon, taxon)
    return list(out.values())


def _from_csv(loc: storage.Location) -> list[Taxon]:
    try:
        rows = inputs.read_csv(loc, RANKS)
    except inputs.InputError as exc:
        raise TaxaError(str(exc)) from None
    taxa = []
    for line, row in rows:
        try:
            taxa.append(Taxon.from_ranks(row, row.get("common_name")))
        except TaxonomyError as exc:
            raise TaxaError(f"{loc.uri}:{line}: {exc}") from None
    return taxa
