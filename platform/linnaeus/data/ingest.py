"""The ingest job: inputs -> cleaned JPEG rows -> Parquet shards -> manifest + report, on Ray Data.

Notable:
- Two Ray Data stages: `_LoadImages` reads and cleans images in parallel (a WebDataset tar is one
  task); `_WriteShards` takes batches of `shard_rows` rows and writes each as one shard from the worker,
  so image bytes never pass through the driver. Both emit small records (shard stats, rejects) that
  the driver gathers to write the manifest and `_report.json`.
- Rejected inputs flow through the pipeline as rows with a `reason` and no image, so every one of
  them reaches the report: nothing is dropped silently.
- Shard size is chosen from the input's size on disk (target ~384 MB, between 256 and 512 MB) unless
  `shard_rows` is given; rejected rows make a shard slightly smaller, never larger.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import Counter
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import ray
from pydantic import BaseModel

from linnaeus import images as image_ops
from linnaeus import runtime, storage
from linnaeus.config import IngestConfig, InputFormat
from linnaeus.data import inputs, shards
from linnaeus.taxonomy import stable_hash64

log = logging.getLogger(__name__)

TARGET_SHARD_BYTES = 384 * 2**20
MAX_CONVERSION_EXAMPLES = 100
LOAD_BATCH = 32  # images per load task call (and per input block)
WRITER_CPUS = 0.5  # the writer mostly waits on compression and I/O


class IngestResult(BaseModel):
    output: str
    run_id: str
    rows: int
    taxa: int
    shards: int
    skipped: int
    converted: int
    skipped_by_reason: dict[str, int]
    seconds: float
    storage_retries: int = 0  # S3 requests repeated after a transient failure (report.json: per operation)


def _clean(row: dict, data: bytes, cfg: IngestConfig) -> dict:
    try:
        clean = image_ops.clean_image(data, cfg.resize, cfg.max_pixels)
    except image_ops.ImageRejected as exc:
        return inputs.reject(row["path"], exc.reason, exc.detail)
    return {**row, "image": clean.data, "converted": clean.converted}


class _LoadImages:
    """Ray Data UDF (a picklable callable run as tasks): plan items -> rows with cleaned `image`
    bytes, or rejects with a `reason`."""

    def __init__(self, root: storage.Location, cfg: IngestConfig, source: str):
        self.root, self.cfg, self.source = root, cfg, source
        self.retries = storage.retry_listener()  # the driver's: a worker has none of its own

    @functools.cached_property
    def _s3(self) -> pafs.FileSystem:
        return storage.s3_filesystem(self.cfg.s3, self.retries)

    def _location(self, path: str) -> storage.Location:
        """A CSV row's path: relative to the input, absolute, or an s3:// URI (one S3 client per
        worker, not one per image)."""
        if path.startswith("s3://"):
            return storage.Location(self._s3, path[len("s3://"):], path)
        if "://" in path or path.startswith("/"):
            return storage.resolve(path, self.cfg.s3)
        return self.root.join(path)

    def _rows(self, item: dict) -> Iterator[dict]:
        if "tar" in item:
            uri = f"s3://{item['tar']}" if self.root.is_s3 else item["tar"]
            yield from self._tar_rows(storage.Location(self.root.fs, item["tar"], uri))
            return
        try:
            data = storage.read_bytes(self._location(item["path"]))
        except storage.StorageError as exc:
            yield inputs.reject(item["path"], "unreadable", str(exc))
            return
        yield _clean(item, data, self.cfg)

    def _tar_rows(self, loc: storage.Location) -> Iterator[dict]:
        count = 0
        try:
            data = storage.read_bytes(loc)
            for row in inputs.read_webdataset_tar(data, loc.path.rsplit("/", 1)[-1]):
                count += 1
                yield _clean(row, row.pop("image"), self.cfg) if "image" in row else row
        except Exception as exc:  # an unreadable or corrupt tar: report it, keep the others
            yield inputs.reject(loc.uri, "unreadable", f"{type(exc).__name__}: {exc}")
            return
        if count == 0:
            yield inputs.reject(loc.uri, "empty", "the tar holds no samples")

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = [row for item in batch.to_pylist() for row in self._rows(item)]
        return _table([{**r, "source": self.source} for r in out], _LOADED)


# Explicit schemas between stages: Ray Data would otherwise guess types from Python values and turn
# all-None columns into NaN floats.
_LOADED = pa.schema([shards.SCHEMA.field("image").with_nullable(True)]
                    + [pa.field(c, pa.string()) for c in (*shards.METADATA_COLUMNS, "path",
                                                          "converted", "input", "reason", "detail")])
_RECORDS = pa.schema([pa.field(c, pa.string()) for c in ("kind", "input", "reason", "detail", "stats")])


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)


class _WriteShards:
    """Ray Data UDF: one batch of rows -> one shard; emits shard stats and the batch's rejects."""

    def __init__(self, root: storage.Location, run_id: str):
        self.root, self.run_id = root, run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        good = [r for r in rows if r.get("reason") is None]
        records = [{"kind": "reject", "input": r["input"], "reason": r["reason"],
                    "detail": r["detail"]} for r in rows if r.get("reason") is not None]
        # Conversions are counted, not listed: a corpus of PNGs would otherwise send one record per
        # image to the driver. One example per kind and shard is kept.
        kinds = Counter(r["converted"] for r in good if r.get("converted"))
        examples = {r["converted"]: r["image_id"] for r in reversed(good) if r.get("converted")}
        records += [{"kind": "converted", "input": examples[k], "reason": k, "detail": str(n)}
                    for k, n in kinds.items()]
        if good:
            table = _table(good, shards.SCHEMA)
            name = f"part-{self.run_id}-{stable_hash64(good[0]['image_id'], len(good)):016x}.parquet"
            stats = shards.write_shard(self.root, name, table)
            records.append({"kind": "shard", "stats": stats.to_json()})
        return _table(records, _RECORDS)


def _shard_rows(cfg: IngestConfig, plan: inputs.Plan) -> int:
    if cfg.shard_rows:
        return cfg.shard_rows
    per_image = plan.input_bytes / max(1, len(plan.items)) if plan.input_bytes else 0
    if cfg.format is InputFormat.WEBDATASET:
        per_image = 0  # a tar's size says nothing about its image count: use the default below
    if cfg.resize:  # re-encoded at the new size: roughly proportional to its area
        per_image = min(per_image or 1e9, cfg.resize * cfg.resize * 0.4)
    rows = int(TARGET_SHARD_BYTES / per_image) if per_image else 16_384
    return max(shards.ROW_GROUP_ROWS, min(200_000, rows))


def _report(cfg: IngestConfig, run_id: str, plan: inputs.Plan, records: list[dict],
            manifest: shards.Manifest, deleted: list[str], retries: dict) -> dict:
    skipped = plan.rejects + [{k: r[k] for k in ("input", "reason", "detail")}
                              for r in records if r["kind"] == "reject"]
    converted = [r for r in records if r["kind"] == "converted"]
    by_kind: Counter[str] = Counter()
    for r in converted:
        by_kind[r["reason"]] += int(r["detail"])
    return {
        "run_id": run_id, "input": cfg.input, "format": cfg.format.value, "output": cfg.output,
        "rows": manifest.rows, "skipped": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "converted": sum(by_kind.values()),
        "converted_by_kind": dict(by_kind),
        "skipped_inputs": sorted(skipped, key=lambda s: s["input"]),
        "converted_examples": [{"image_id": c["input"], "conversion": c["reason"]}
                               for c in converted[:MAX_CONVERSION_EXAMPLES]],
        "stale_shards_deleted": deleted,
        "storage_retries": retries,
    }


def plan_ingest(cfg: IngestConfig) -> inputs.Plan:
    """Driver-side planning (no Ray): lists inputs and reads their taxonomy; fails on a bad input."""
    return inputs.plan_input(storage.resolve(cfg.input, cfg.s3), cfg.format)


def run_ingest(cfg: IngestConfig, plan: inputs.Plan | None = None) -> IngestResult:
    """Ingest `cfg.input` into a corpus at `cfg.output` (Ray must be initialised by the caller)."""
    with runtime.storage_retries() as retries:
        return _ingest(cfg, plan, retries)


def _ingest(cfg: IngestConfig, plan: inputs.Plan | None, retries: runtime.StorageRetries) -> IngestResult:
    start = time.monotonic()
    src, out = storage.resolve(cfg.input, cfg.s3), storage.resolve(cfg.output, cfg.s3)
    plan = plan or plan_ingest(cfg)
    storage.ensure_bucket(out)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:6]
    shard_rows = _shard_rows(cfg, plan)
    log.info("ingest %s (%s): %d inputs, %d refused while planning, %d rows per shard -> %s",
             src.uri, cfg.format.value, len(plan.items), len(plan.rejects), shard_rows, out.uri)
    records: list[dict] = []
    if plan.items:
        per_block = 1 if cfg.format is InputFormat.WEBDATASET else LOAD_BATCH
        ds = ray.data.from_items(plan.items, override_num_blocks=max(1, len(plan.items) // per_block))
        ds = ds.map_batches(_LoadImages(src, cfg, src.uri), batch_size=per_block,
                            batch_format="pyarrow")
        # A different CPU request keeps the writer a separate stage: fused with the loader, one task
        # would wait for a whole shard of rows and the loading would not run in parallel.
        ds = ds.map_batches(_WriteShards(out, run_id), batch_size=shard_rows, batch_format="pyarrow",
                            num_cpus=WRITER_CPUS)
        records = ds.take_all()
    stats = [shards.ShardStats.from_json(r["stats"]) for r in records if r["kind"] == "shard"]
    skipped = len(plan.rejects) + sum(r["kind"] == "reject" for r in records)
    manifest = shards.build_manifest(run_id, src.uri, stats, skipped)
    deleted = shards.commit(out, manifest)
    # counted before report.json's own write: a retry of that one is in neither the report nor the result
    report = _report(cfg, run_id, plan, records, manifest, deleted, retries.report())
    shards.write_json(out.join(shards.REPORT_NAME), report)
    return IngestResult(output=out.uri, run_id=run_id, rows=manifest.rows, taxa=manifest.taxa,
                        shards=len(manifest.shards), skipped=report["skipped"],
                        converted=report["converted"], skipped_by_reason=report["skipped_by_reason"],
                        seconds=round(time.monotonic() - start, 2),
                        storage_retries=report["storage_retries"]["requests"])
