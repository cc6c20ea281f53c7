from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linnaeus import storage
from linnaeus.data import shards


def _table(n: int, common: bool = True) -> pa.Table:
    rows = [{"image": b"\xff\xd8jpeg", "image_id": f"id{i}", "kingdom": "Animalia",
             "phylum": "Chordata", "class": "Aves", "order": "Passeriformes", "family": "Corvidae",
             "genus": "Pica", "species": "hudsonia" if i % 2 else None,
             "common_name": "magpie" if common else None, "caption": None, "source": "test"}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=shards.SCHEMA)


def test_shard_has_row_groups_of_about_a_thousand_rows(tmp_path):
    root = storage.resolve(tmp_path)
    stats = shards.write_shard(root, "part-a-1.parquet", _table(2500))
    meta = pq.ParquetFile(tmp_path / "part-a-1.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, 1024, 452]
    assert stats.rows == 2500 and stats.row_groups == 3
    assert stats.bytes == (tmp_path / "part-a-1.parquet").stat().st_size


def test_stats_count_rank_completeness_text_types_and_taxa(tmp_path):
    stats = shards.write_shard(storage.resolve(tmp_path), "part-a-1.parquet", _table(10, common=False))
    assert stats.rank_counts["species"] == 5 and stats.rank_counts["genus"] == 10
    assert stats.rank_counts["common_name"] == 0
    assert stats.text_type_counts == {"taxonomic": 10, "scientific": 10, "common": 0,
                                      "scientific_common": 0, "taxonomic_common": 0}
    assert len(stats.taxa) == 2  # genus-level and species-level Pica


def test_manifest_sums_shards_and_round_trips(tmp_path):
    root = storage.resolve(tmp_path)
    parts = [shards.write_shard(root, f"part-r-{i}.parquet", _table(4)) for i in range(3)]
    parts = [shards.ShardStats.from_json(p.to_json()) for p in parts]  # as gathered from Ray
    manifest = shards.build_manifest("r", "src", parts, skipped=2)
    shards.commit(root, manifest)
    again = shards.read_manifest(root)
    assert again.rows == 12 and again.taxa == 2 and again.skipped == 2
    assert [e.path for e in again.shards] == ["part-r-0.parquet", "part-r-1.parquet", "part-r-2.parquet"]


def test_commit_deletes_shards_of_earlier_runs_only_after_the_manifest(tmp_path):
    root = storage.resolve(tmp_path)
    shards.commit(root, shards.build_manifest("old", "s", [shards.write_shard(
        root, "part-old-0.parquet", _table(3))], 0))
    new = shards.write_shard(root, "part-new-0.parquet", _table(5))
    assert shards.read_manifest(root).rows == 3  # the old corpus stays readable meanwhile
    deleted = shards.commit(root, shards.build_manifest("new", "s", [new], 0))
    assert deleted == ["part-old-0.parquet"] and not (tmp_path / "part-old-0.parquet").exists()
    assert shards.read_manifest(root).rows == 5


def test_missing_or_invalid_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(shards.CorpusError, match="no _manifest.json"):
        shards.read_manifest(storage.resolve(tmp_path))
    (tmp_path / "_manifest.json").write_text(json.dumps({"schema_version": 1, "rows": "many"}))
    with pytest.raises(shards.CorpusError, match="invalid manifest"):
        shards.read_manifest(storage.resolve(tmp_path))
