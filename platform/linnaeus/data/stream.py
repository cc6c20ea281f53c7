"""The training stream: corpus shards -> Ray Data -> decoded, augmented, captioned, tokenised batches.

Notable:
- Planning reads `_manifest.json` and nothing else. The dataset is `ray.data.range(shards x epochs)`:
  item i is (epoch, slot), and the reader maps the slot through that epoch's seeded permutation of the
  shard list. Planning is O(1) Ray work plus one `ray.put` of the path list, however many images.
- Each reader streams one shard row group at a time (~1k rows) through a bounded shuffle buffer, in a
  per-(epoch, shard) shuffled row-group order; parallel readers interleave, which mixes shards further.
- Captions are drawn per image from (seed, epoch, image_id), tokenised in the pipeline (CPU workers):
  `iter_torch_batches` cannot carry strings, and the trainer should not spend its time on text.
- `decode="gpu"` ships the JPEG bytes instead of pixels; `device_decode` turns them into tensors on the
  trainer's device. Use it when CPU decoding cannot keep up with the GPU.
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

from linnaeus import storage
from linnaeus.config import StreamConfig
from linnaeus.data import images as image_ops
from linnaeus.data import shards
from linnaeus.taxonomy import RANKS, Taxon, TextSampler, rng_for, stable_hash64

log = logging.getLogger(__name__)

MAX_READ_BLOCKS = 4096
READ_COLUMNS = ["image", "image_id", *RANKS, "common_name"]
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


@dataclass
class Stream:
    """A planned stream: the Ray dataset plus what it was planned from."""

    dataset: ray.data.Dataset
    manifest: shards.Manifest
    config: StreamConfig
    epochs: int
    counter: ray.actor.ActorHandle

    @property
    def rows_per_epoch(self) -> int:
        return self.manifest.rows

    def skipped(self) -> dict:
        """Images skipped so far (counts by reason and the first examples)."""
        return ray.get(self.counter.summary.remote())


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The shard permutation of one epoch (the same on every process)."""
    return rng_for(seed, "shards", epoch).permutation(num_shards)


class _ReadShards:
    """Ray Data UDF: stream item ids -> row-group tables of one shard, through a shuffle buffer."""

    def __init__(self, fs, paths_ref, cfg: StreamConfig, start_epoch: int, num_shards: int):
        self.fs, self.paths_ref, self.cfg = fs, paths_ref, cfg
        self.start_epoch, self.num_shards = start_epoch, num_shards

    @functools.cached_property
    def paths(self) -> list[str]:
        return ray.get(self.paths_ref)

    def __call__(self, batch: dict) -> Iterator[pa.Table]:
        for item in batch["id"]:
            epoch = self.start_epoch + int(item) // self.num_shards
            shard = int(shard_order(self.num_shards, self.cfg.seed, epoch)[int(item) % self.num_shards])
            yield from self._read(self.paths[shard], epoch)

    def _read(self, path: str, epoch: int) -> Iterator[pa.Table]:
        rng = rng_for(self.cfg.seed, "rows", epoch, path)
        with self.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            buffer: pa.Table | None = None
            for group in rng.permutation(parquet.num_row_groups):
                table = parquet.read_row_group(int(group), columns=READ_COLUMNS)
                buffer = table if buffer is None else pa.concat_tables([buffer, table])
                if buffer.num_rows > self.cfg.shuffle_buffer:
                    buffer = buffer.take(rng.permutation(buffer.num_rows)) if self.cfg.shuffle_buffer \
                        else buffer
                    keep = self.cfg.shuffle_buffer // 2
                    yield _with_epoch(buffer.slice(0, buffer.num_rows - keep), epoch)
                    buffer = buffer.slice(buffer.num_rows - keep)
            if buffer is not None and buffer.num_rows:
                yield _with_epoch(buffer.take(rng.permutation(buffer.num_rows)), epoch)


def _with_epoch(table: pa.Table, epoch: int) -> pa.Table:
    return table.append_column("epoch", pa.array(np.full(table.num_rows, epoch, dtype=np.int64)))


@functools.lru_cache(maxsize=4)
def train_transform(image_size: int, crop_scale: tuple[float, float]):
    """open_clip's own training transform: RandomResizedCrop(bicubic) + to-tensor + CLIP normalise."""
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=True, aug_cfg={"scale": crop_scale})


@functools.lru_cache(maxsize=4)
def crop_transform(image_size: int, crop_scale: tuple[float, float]):
    """The PIL half of `train_transform` (crop + mode): its output stays 8-bit, and the float half
    (to-tensor + normalise, `loader.normalise`) runs on the trainer. Pixels travel through Ray's object
    store as uint8, a quarter of the bytes of float32."""
    from torchvision.transforms import Compose

    return Compose(train_transform(image_size, crop_scale).transforms[:-2])


def crop_pixels(data: bytes, image_size: int, crop_scale: tuple[float, float]) -> np.ndarray:
    """Encoded image -> augmented uint8 pixels [3, S, S]."""
    image = crop_transform(image_size, crop_scale)(image_ops.decode_rgb(data))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


@functools.lru_cache(maxsize=4)
def tokenizer(model: str, context_length: int):
    import open_clip

    return open_clip.get_tokenizer(model, context_length=context_length)


def looks_like_jpeg(data: bytes) -> bool:
    """Cheap structural check for the GPU path (no decode): SOI at the start, EOI near the end."""
    return len(data) > 4 and data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-64:]


class _Preprocess:
    """Ray Data UDF: rows -> {image (uint8 [B,3,S,S], or JPEG bytes), text, sample_key, epoch} numpy
    columns; skips what it cannot use."""

    def __init__(self, cfg: StreamConfig, counter: ray.actor.ActorHandle):
        self.cfg, self.counter = cfg, counter
        self.sampler = TextSampler(cfg.text_types, cfg.mixing, cfg.seed)

    def __call__(self, table: pa.Table) -> dict:
        cols = table.to_pydict()
        ids, epochs = cols["image_id"], cols["epoch"]
        taxa = [Taxon(*(cols[r][i] for r in RANKS), common_name=cols["common_name"][i])
                for i in range(table.num_rows)]
        captions = self._captions(taxa, ids, epochs)
        torch.manual_seed(stable_hash64(self.cfg.seed, epochs[0] if ids else 0, *ids[:1]))
        keep, pixels, skipped = [], [], []
        for i, data in enumerate(cols["image"]):
            if captions[i] is None:
                skipped.append({"image_id": ids[i], "reason": "no_caption",
                                "detail": f"taxon fills none of {[t.value for t in self.cfg.text_types]}"})
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
        return self._output(keep, pixels, [captions[i] for i in keep], ids, epochs)

    def _captions(self, taxa: list[Taxon], ids: list[str], epochs: list[int]) -> list[str | None]:
        out: list[str | None] = [None] * len(ids)
        for epoch in sorted(set(epochs)):
            index = [i for i, e in enumerate(epochs) if e == epoch]
            drawn = self.sampler.captions([taxa[i] for i in index], [ids[i] for i in index], epoch)
            for i, caption in zip(index, drawn):
                out[i] = caption
        return out

    def _pixels(self, data: bytes):
        if self.cfg.decode == "gpu":
            if not looks_like_jpeg(data):
                raise image_ops.ImageRejected("undecodable", "not a complete JPEG (no SOI/EOI marker)")
            return data
        return crop_pixels(data, self.cfg.image_size, tuple(self.cfg.crop_scale))

    def _output(self, keep: list[int], pixels: list, captions: list[str], ids: list[str],
                epochs: list[int]) -> dict:
        size = self.cfg.image_size
        tokens = (tokenizer(self.cfg.model, self.cfg.context_length)(captions).numpy() if captions
                  else np.zeros((0, self.cfg.context_length), dtype=np.int64))
        if self.cfg.decode == "gpu":
            image = np.array(pixels + [b""], dtype=object)[:-1]  # keep bytes as objects, never a 2-D array
        else:
            image = np.stack(pixels) if pixels else np.zeros((0, 3, size, size), dtype=np.uint8)
        return {"image": image, "text": tokens.astype(np.int64),
                "sample_key": np.array([stable_hash64(ids[i]) for i in keep], dtype=np.int64),
                "epoch": np.array([epochs[i] for i in keep], dtype=np.int64)}


def build_stream(cfg: StreamConfig, epochs: int = 1, start_epoch: int = 0) -> Stream:
    """Plan the stream of `epochs` epochs from `start_epoch` (Ray must be initialised)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    root = storage.resolve(cfg.data, cfg.s3)
    manifest = shards.read_manifest(root)
    if not manifest.shards:
        raise shards.CorpusError(f"{root.uri}: the corpus has no shards (0 rows ingested)")
    paths = [manifest.shard_location(root, e).path for e in manifest.shards]
    items = len(paths) * epochs
    counter = SkipCounter.remote()
    ds = ray.data.range(items, override_num_blocks=min(items, MAX_READ_BLOCKS))
    ds = ds.map_batches(_ReadShards(root.fs, ray.put(paths), cfg, start_epoch, len(paths)),
                        batch_size=1, batch_format="numpy")
    ds = ds.map_batches(_Preprocess(cfg, counter), batch_size=cfg.preprocess_batch,
                        batch_format="pyarrow")
    return Stream(ds, manifest, cfg, epochs, counter)
