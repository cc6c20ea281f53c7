"""The planning benchmark's corpus: a generated manifest of a 100M-image corpus in 100k shards, whose
entries can all point at one real 64-row shard (to time the first batch too)."""

from __future__ import annotations

from pathlib import Path

from linnaeus import storage
from linnaeus.data import shards
from linnaeus.taxonomy import RANKS


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        line = next(line for line in fh if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def write_manifest(root: Path, num_shards: int, rows_per_shard: int) -> None:
    groups = -(-rows_per_shard // shards.ROW_GROUP_ROWS)
    entries = [shards.ShardEntry(path=f"part-bench-{i:08x}.parquet", rows=rows_per_shard,
                                 bytes=384 * 2**20, row_groups=groups) for i in range(num_shards)]
    rows = num_shards * rows_per_shard
    manifest = shards.Manifest(run_id="bench", created_at="generated", rows=rows, taxa=450_000,
                               shards=entries, rank_completeness={r: rows for r in [*RANKS, "common_name"]},
                               text_types={}, source="generated")
    storage.write_bytes(storage.resolve(root / shards.MANIFEST_NAME),
                        manifest.model_dump_json().encode())


def link_shards(root: Path, num_shards: int) -> None:
    """Make every manifest entry a real, readable shard: 64 synthetic rows, symlinked under every name."""
    import tempfile

    from linnaeus.config import IngestConfig
    from linnaeus.data.ingest import run_ingest
    from linnaeus.data.synthetic import write_folder_corpus

    with tempfile.TemporaryDirectory() as tmp:
        write_folder_corpus(Path(tmp) / "raw", num_taxa=8, images_per_taxon=8, size=64)
        run_ingest(IngestConfig(input=str(Path(tmp) / "raw"), format="folder",
                                output=str(Path(tmp) / "corpus"), shard_rows=64))
        real = root / "_real-shard.parquet"
        real.write_bytes(next((Path(tmp) / "corpus").glob("part-*.parquet")).read_bytes())
    for i in range(num_shards):
        target = root / f"part-bench-{i:08x}.parquet"
        if not target.is_symlink():
            target.symlink_to(real.name)
