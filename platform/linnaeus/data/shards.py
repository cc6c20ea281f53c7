"""The corpus format: Parquet shards plus `_manifest.json`, and the rules that keep it consistent.

Notable:
- The manifest is the only entry point: readers take the shard list (with row counts) from it and
  never list the bucket, so planning costs O(shards) and files from an unfinished or older run are
  invisible. It is written last; until it exists, the corpus does not exist.
- Shard names carry the ingest run id (`part-<run>-<n>.parquet`). A re-run writes new files, swaps
  the manifest, then deletes files the new manifest does not list: a crash at any point leaves either
  the old corpus or the new one readable, and never both (no duplicated rows).
- Row groups of ~1k rows let a reader stream a shard with bounded memory and project columns
  (metadata jobs skip the `image` bytes).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linnaeus import storage
from linnaeus.taxonomy import ALL_TEXT_TYPES, RANKS, Taxon, text_type_counts

SCHEMA_VERSION = 1
MANIFEST_NAME = "_manifest.json"
REPORT_NAME = "_report.json"
ROW_GROUP_ROWS = 1024
METADATA_COLUMNS = ["image_id", *RANKS, "common_name", "caption", "source"]

SCHEMA = pa.schema(
    [pa.field("image", pa.binary(), nullable=False), pa.field("image_id", pa.string(), nullable=False)]
    + [pa.field(rank, pa.string()) for rank in RANKS]
    + [pa.field("common_name", pa.string()), pa.field("caption", pa.string()),
       pa.field("source", pa.string())]
)


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the corpus root
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    row_groups: int = Field(ge=0)  # the stream's unit of work: readers plan from this, not the footer


class Manifest(BaseModel):
    """`_manifest.json`: what the corpus holds, written after every shard is complete."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_at: str
    rows: int
    taxa: int
    shards: list[ShardEntry]
    rank_completeness: dict[str, int]  # rows with a value at each rank (and common_name)
    text_types: dict[str, int]  # rows whose taxon can fill each text type
    source: str = ""
    skipped: int = 0

    def shard_location(self, root: storage.Location, entry: ShardEntry) -> storage.Location:
        return root.join(entry.path)


class CorpusError(ValueError):
    """A corpus that cannot be read: names the URI and what is wrong."""


def read_manifest(root: storage.Location) -> Manifest:
    loc = root.join(MANIFEST_NAME)
    try:
        raw = storage.read_bytes(loc)
    except storage.StorageError as exc:
        if not storage.exists(loc):
            raise CorpusError(f"{root.uri}: no {MANIFEST_NAME} (not a corpus, or its ingest never "
                              "finished)") from None
        raise CorpusError(str(exc)) from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CorpusError(f"{loc.uri}: invalid manifest: {exc}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise CorpusError(f"{loc.uri}: schema_version {manifest.schema_version} is not supported "
                          f"(this build reads {SCHEMA_VERSION})")
    return manifest


def write_json(loc: storage.Location, payload: dict) -> None:
    storage.write_bytes(loc, json.dumps(payload, indent=1, sort_keys=False).encode())


@dataclass
class ShardStats:
    """What one shard adds to the manifest; summed by the driver (small, picklable)."""

    path: str
    rows: int
    bytes: int
    row_groups: int
    rank_counts: dict[str, int]
    text_type_counts: dict[str, int]
    taxa: set[str]

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "taxa": sorted(self.taxa)})

    @classmethod
    def from_json(cls, text: str) -> "ShardStats":
        raw = json.loads(text)
        return cls(**{**raw, "taxa": set(raw["taxa"])})


def rows_stats(table: pa.Table) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Per-rank completeness, text-type availability and distinct lineages of a table's rows."""
    cols = {c: table.column(c).to_pylist() for c in [*RANKS, "common_name"]}
    rank_counts = {c: sum(v is not None for v in values) for c, values in cols.items()}
    rows = Taxon.from_columns(cols)
    return rank_counts, text_type_counts(rows), {taxon.key for taxon in rows}


def write_shard(root: storage.Location, name: str, table: pa.Table) -> ShardStats:
    """Write one shard (row groups of ROW_GROUP_ROWS) and return its statistics."""
    table = table.select(SCHEMA.names).cast(SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression="zstd",
                   use_dictionary=[c for c in SCHEMA.names if c not in ("image", "image_id")])
    data = sink.getvalue()
    storage.write_bytes(root.join(name), data)
    rank_counts, tt_counts, taxa = rows_stats(table)
    groups = pq.read_metadata(io.BytesIO(data)).num_row_groups
    return ShardStats(name, table.num_rows, len(data), groups, rank_counts, tt_counts, taxa)


def build_manifest(run_id: str, source: str, shards: list[ShardStats], skipped: int) -> Manifest:
    shards = sorted(shards, key=lambda s: s.path)
    rank_counts = dict.fromkeys([*RANKS, "common_name"], 0)
    tt_counts = dict.fromkeys((t.value for t in ALL_TEXT_TYPES), 0)
    taxa: set[str] = set()
    for s in shards:
        for k, v in s.rank_counts.items():
            rank_counts[k] += v
        for k, v in s.text_type_counts.items():
            tt_counts[k] += v
        taxa |= s.taxa
    return Manifest(
        run_id=run_id, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        rows=sum(s.rows for s in shards), taxa=len(taxa),
        shards=[ShardEntry(path=s.path, rows=s.rows, bytes=s.bytes, row_groups=s.row_groups)
                for s in shards],
        rank_completeness=rank_counts, text_types=tt_counts, source=source, skipped=skipped)


def commit(root: storage.Location, manifest: Manifest) -> list[str]:
    """Publish the manifest, then delete shard files it does not list; returns what was deleted."""
    storage.write_bytes(root.join(MANIFEST_NAME), manifest.model_dump_json(indent=1).encode())
    keep = {e.path for e in manifest.shards}
    stale = [i for i in storage.list_files(root)
             if i.base_name.startswith("part-") and i.base_name not in keep]
    for info in stale:
        storage.delete(storage.Location(root.fs, info.path, root.join(info.base_name).uri))
    return [i.base_name for i in stale]

