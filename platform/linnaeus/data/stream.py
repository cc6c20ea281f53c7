"""The training stream: corpus shards -> Ray Data -> decoded, augmented, captioned, tokenised batches.

Notable:
- Planning reads `_manifest.json` and nothing else. The unit of work is a row group (~1k rows): the
  dataset is the item ids 0 .. row groups x epochs, item i is (epoch, slot), and the reader maps the
  slot through that epoch's seeded permutation of every row group in the corpus. Planning is one
  `ray.put` of the (path, group) list (~100k entries for 100M images) and O(1) Ray work.
- Every row carries its `position`, the global item index (epoch x row groups + slot) it came from.
  A checkpoint stores the lowest position the trainers were still reading, and `build_stream(...,
  start=that)` continues from there. Readers work through whole input blocks (items / 4,096 row
  groups each), so a resume re-reads up to about one block per reader in flight, and rows still
  waiting in a shuffle buffer at the checkpoint can be missed for that epoch (docs/training.md).
- A reader call takes the items of one input block and mixes their rows in a bounded shuffle buffer;
  parallel readers interleave, which mixes further. Row groups, not shards, are spread over the
  preprocess workers, so a corpus of few large shards still keeps every worker busy.
- Captions come from the recipe's text source (`linnaeus.text`: BioCLIP's taxonomic types by default),
  drawn per image from (seed, epoch, image_id); the readers project only the columns the source needs.
  They are tokenised in the pipeline (CPU workers) by the text tower's tokenizer: `iter_torch_batches`
  cannot carry strings, and the trainer should not spend its time on text.
- Extra views an objective asks for (`views`) are cropped from the same decoded image on the CPU path
  (`view_<name>` columns), and on the trainer's device with `decode="gpu"` or `"hybrid"`.
- `decode="gpu"` ships the JPEG bytes instead of pixels; `device_decode` turns them into tensors on the
  trainer's device. `decode="hybrid"` decodes here and ships the whole decoded image (uint8 HWC bytes
  with its height and width); the trainer crops and resizes it on its device. Both leave the costly
  part of the CPU path (the bicubic resize) out of Ray Data; docs/training.md says when to use which.
- Preprocessing (`Preprocess`) runs in an actor pool (`preprocess_workers`, default one per CPU but one), so
  imports and tokenizer loading happen once per worker, not once per task.
- A corrupt image met here is skipped, counted by a small actor (`Stream.skipped()`) and logged; it
  never fails the run.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from linnaeus import images as image_ops
from linnaeus import storage
from linnaeus.clip.preprocess import train_pixels
from linnaeus.clip.text_towers import make_tower
from linnaeus.config import StreamConfig
from linnaeus.data import shards
from linnaeus.registry import load_plugins
from linnaeus.taxonomy import rng_for, stable_hash64
from linnaeus.text import TextSampler, make_source

log = logging.getLogger(__name__)

MAX_READ_BLOCKS = 4096
READER_CPUS = 0.5  # readers mostly wait on storage; the CPU work is in Preprocess
MAX_SKIP_EXAMPLES = 100


@ray.remote(num_cpus=0)
class SkipCounter:
    """Counts images the stream could not use (a rare path, so readers wait for the call)."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.examples: list[dict] = []

    def add(self, records: list[dict]) -> None:
        self.by_reason.update(r["reason"] for r in records)
        self.examples.extend(records[: MAX_SKIP_EXAMPLES - len(self.examples)])

    def summary(self) -> dict:
        return {"skipped": sum(self.by_reason.values()), "by_reason": dict(self.by_reason),
                "examples": list(self.examples)}


def skip_counter() -> ray.actor.ActorHandle:
    """A SkipCounter on the head node: an actor dies with its node, and a worker node lost mid-run
    (tests/ray/test_multinode.py) must not take the run's count, and its ending, with it; the head lives
    as long as the cluster does. (Not "the driver's node": a driver on a host with several raylets may
    be attached to any of them.)"""
    return SkipCounter.options(resources={"node:__internal_head__": 0.001}).remote()


@dataclass
class Stream:
    """A planned stream: the Ray dataset plus what it was planned from."""

    dataset: ray.data.Dataset
    manifest: shards.Manifest
    config: StreamConfig
    epochs: int
    counter: ray.actor.ActorHandle

    def skipped(self) -> dict:
        """Images skipped so far (counts by reason and the first examples)."""
        return ray.get(self.counter.summary.remote())


@functools.lru_cache(maxsize=2)
def unit_order(num_units: int, seed: int, epoch: int) -> np.ndarray:
    """The row-group permutation of one epoch (the same on every process)."""
    return rng_for(seed, "row-groups", epoch).permutation(num_units)


class _ReadRowGroups:
    """Ray Data UDF: stream item ids -> rows of the row groups they name, through a shuffle buffer.

    Item i is (epoch, slot); the slot goes through that epoch's permutation of every row group of the
    corpus. One call gets the items of one input block (several row groups of different shards when
    the corpus is large), and mixes them in a buffer of `shuffle_buffer` rows.
    """

    def __init__(self, fs, units_ref, cfg: StreamConfig, start: int, num_units: int, columns: list[str]):
        # `columns` are worked out on the driver: a plugin text source is not registered in these tasks
        self.fs, self.units_ref, self.cfg, self.columns = fs, units_ref, cfg, columns
        self.start, self.num_units = start, num_units

    @functools.cached_property
    def units(self) -> list[tuple[str, int, int]]:
        return ray.get(self.units_ref)

    def __call__(self, batch: dict) -> Iterator[pa.Table]:
        buffer: pa.Table | None = None
        ids = [self.start + int(i) for i in batch["id"]]
        rng = rng_for(self.cfg.seed, "rows", *ids[:1])
        for item in ids:
            epoch = item // self.num_units
            path, group, groups = self.units[int(unit_order(self.num_units, self.cfg.seed, epoch)
                                                 [item % self.num_units])]
            with self.fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                if parquet.num_row_groups != groups:  # rewritten behind the manifest's back
                    raise shards.CorpusError(f"{path}: {parquet.num_row_groups} row groups, the "
                                             f"manifest says {groups}; re-run the ingest")
                table = parquet.read_row_group(group, columns=self.columns)
            table = _with_position(table.take(rng.permutation(table.num_rows)), item, epoch)
            buffer = table if buffer is None else pa.concat_tables([buffer, table])
            if buffer.num_rows > self.cfg.shuffle_buffer:
                buffer = buffer.take(rng.permutation(buffer.num_rows))
                keep = self.cfg.shuffle_buffer // 2
                yield buffer.slice(0, buffer.num_rows - keep)
                buffer = buffer.slice(buffer.num_rows - keep)
        if buffer is not None and buffer.num_rows:
            yield buffer.take(rng.permutation(buffer.num_rows))


def _with_position(table: pa.Table, item: int, epoch: int) -> pa.Table:
    for name, value in (("epoch", epoch), ("position", item)):
        table = table.append_column(name, pa.array(np.full(table.num_rows, value, dtype=np.int64)))
    return table


def read_columns(cfg: StreamConfig) -> list[str]:
    """The shard columns the stream reads: image bytes, id, and what the text source needs."""
    return ["image", "image_id", *(c for c in make_source(cfg.text_source).columns if c not in ("image", "image_id"))]


def looks_like_jpeg(data: bytes) -> bool:
    """Cheap structural check for the GPU path (no decode): SOI at the start, EOI near the end."""
    return len(data) > 4 and data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-64:]


class Preprocess:
    """Ray Data UDF: rows -> {image (uint8 [B,3,S,S], or JPEG bytes), view_<name> (uint8, CPU path), text,
    sample_key, epoch, position} numpy columns; skips what it cannot use."""

    def __init__(self, cfg: StreamConfig, counter: ray.actor.ActorHandle | None):
        load_plugins(cfg.plugins)
        self.cfg, self.counter = cfg, counter
        self.source = make_source(cfg.text_source)
        self.sampler = TextSampler(self.source, cfg.text_types, cfg.mixing, cfg.seed)
        # loaded once per worker, before the first batch
        self.tokenize = make_tower(cfg.text_tower.name, cfg.text_tower.params).tokenizer(cfg.model, cfg.context_length)

    def __call__(self, table: pa.Table) -> dict:
        cols = table.to_pydict()
        ids, epochs = cols["image_id"], cols["epoch"]
        items = self.source.items({c: cols[c] for c in self.source.columns})
        captions = self._captions(items, ids, epochs)
        torch.manual_seed(stable_hash64(self.cfg.seed, epochs[0] if ids else 0, *ids[:1]))
        keep, pixels, skipped = [], [], []
        for i, data in enumerate(cols["image"]):
            if captions[i] is None:
                skipped.append({"image_id": ids[i], "reason": "no_caption",
                                "detail": f"no {self.source.key} caption of kinds {list(self.cfg.text_types)}"})
                continue
            try:
                pixels.append(self._pixels(data))
            except image_ops.ImageRejected as exc:
                skipped.append({"image_id": ids[i], "reason": exc.reason, "detail": exc.detail})
                continue
            keep.append(i)
        if skipped:
            log.warning("stream: skipped %d image(s), e.g. %s", len(skipped), skipped[0])
            # Wait for the count to land: the batch must not reach a consumer before its skips do.
            ray.get(self.counter.add.remote(skipped))
        return self._output(keep, pixels, [captions[i] for i in keep], ids, epochs, cols["position"])

    def _captions(self, items: list, ids: list[str], epochs: list[int]) -> list[str | None]:
        out: list[str | None] = [None] * len(ids)
        for epoch in sorted(set(epochs)):
            index = [i for i, e in enumerate(epochs) if e == epoch]
            drawn = self.sampler.captions([items[i] for i in index], [ids[i] for i in index], epoch)
            for i, caption in zip(index, drawn):
                out[i] = caption
        return out

    def _pixels(self, data: bytes):
        """JPEG bytes (gpu), decoded bytes + size (hybrid), or (crop, {view: crop}) uint8 arrays (cpu)."""
        if self.cfg.decode == "gpu":
            if not looks_like_jpeg(data):
                raise image_ops.ImageRejected("undecodable", "not a complete JPEG (no SOI/EOI marker)")
            return data
        image = image_ops.decode_rgb(data)
        if self.cfg.decode == "hybrid":
            pixels = np.asarray(image, dtype=np.uint8)
            return pixels.tobytes(), pixels.shape[0], pixels.shape[1]
        crop = train_pixels(image, self.cfg.image_size, tuple(self.cfg.crop_scale))
        return crop, {v.name: train_pixels(image, v.size, v.scale) for v in self.cfg.views}

    def _output(self, keep: list[int], pixels: list, captions: list[str], ids: list[str],
                epochs: list[int], positions: list[int]) -> dict:
        size = self.cfg.image_size
        tokens = (self.tokenize(captions).numpy() if captions
                  else np.zeros((0, self.cfg.context_length), dtype=np.int64))
        extra = {}
        if self.cfg.decode == "hybrid":
            extra = {"height": np.array([p[1] for p in pixels], dtype=np.int32),
                     "width": np.array([p[2] for p in pixels], dtype=np.int32)}
            pixels = [p[0] for p in pixels]
        if self.cfg.decode in ("gpu", "hybrid"):
            image = np.array(pixels + [b""], dtype=object)[:-1]  # keep bytes as objects, never a 2-D array
        else:
            image = np.stack([p[0] for p in pixels]) if pixels else np.zeros((0, 3, size, size), dtype=np.uint8)
            extra = {f"view_{v.name}": np.stack([p[1][v.name] for p in pixels]) if pixels
                     else np.zeros((0, 3, v.size, v.size), dtype=np.uint8) for v in self.cfg.views}
        return {"image": image, **extra, "text": tokens.astype(np.int64),
                "sample_key": np.array([stable_hash64(ids[i]) for i in keep], dtype=np.int64),
                "epoch": np.array([epochs[i] for i in keep], dtype=np.int64),
                "position": np.array([positions[i] for i in keep], dtype=np.int64)}


def _item_ids(items: int) -> ray.data.Dataset:
    """`ray.data.range(items)` with CPU-free read tasks. `range`'s tasks each reserve a whole CPU for
    generating integers; inside a Ray Train run on a small machine that CPU is not in Ray Data's budget
    and the read stalls forever behind the preprocessing actors. (`from_numpy` of the ids avoids the
    reservation too, but costs ~3 ms per block to put: 14 s to plan 100M images instead of ~1 s.)"""
    from ray.data._internal.datasource.range_datasource import RangeDatasource  # what `range` reads

    # Two at a time: CPU-free tasks are not bounded by CPU slots, and thousands of them at once make Ray
    # start a worker process per task (the first batch of a 100M-image plan took 339 s that way).
    return ray.data.read_datasource(RangeDatasource(n=items, block_format="arrow", column_name="id"),
                                    num_cpus=0, concurrency=2, override_num_blocks=min(items, MAX_READ_BLOCKS))


def build_stream(cfg: StreamConfig, epochs: int = 1, start_epoch: int = 0, start: int | None = None,
                 manifest: shards.Manifest | None = None,
                 counter: ray.actor.ActorHandle | None = None) -> Stream:
    """Plan the stream from the beginning of `start_epoch` (or from item `start`, a `position` read
    off earlier rows) to the end of epoch `start_epoch + epochs - 1` (Ray must be initialised)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    root = storage.resolve(cfg.data, cfg.s3)
    manifest = manifest or shards.read_manifest(root)
    if not manifest.shards:
        raise shards.CorpusError(f"{root.uri}: the corpus has no shards (0 rows ingested)")
    units = [(manifest.shard_location(root, e).path, g, e.row_groups)
             for e in manifest.shards for g in range(e.row_groups)]
    end = (start_epoch + epochs) * len(units)
    start = start_epoch * len(units) if start is None else start
    if not 0 <= start < end:
        raise ValueError(f"stream start {start} outside [0, {end})")
    items = end - start
    counter = counter or skip_counter()
    ds = _item_ids(items)
    # The reader asks for a different CPU share than the preprocessing, always, so Ray Data does not
    # fuse the two: fused, the pair would take the larger batch size and bundle many items into one task.
    reader_cpus = READER_CPUS if cfg.preprocess_cpus != READER_CPUS else READER_CPUS * 0.9
    ds = ds.map_batches(_ReadRowGroups(root.fs, ray.put(units), cfg, start, len(units), read_columns(cfg)),
                        batch_size=None, batch_format="numpy", num_cpus=reader_cpus)
    # An actor pool, not tasks: each preprocess worker imports torch/open_clip and loads the tokenizer
    # once. As tasks, Ray reaps idle worker processes and the replacements pay those seconds again.
    # The pool starts at full size (growing from one actor took most of a short run), and by default
    # leaves a CPU for the readers and the consumer so the pipeline can never starve itself.
    actors = cfg.preprocess_workers or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    ds = ds.map_batches(Preprocess, fn_constructor_args=(cfg, counter),
                        batch_size=cfg.preprocess_batch, batch_format="pyarrow",
                        num_cpus=cfg.preprocess_cpus,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors,
                                                           initial_size=actors))
    return Stream(ds, manifest, cfg, epochs, counter)
