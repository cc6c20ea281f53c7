"""Image features at scale: a Ray Data batch-inference pipeline over a corpus or an image folder.

Notable:
- Input is a Linnaeus corpus (shards + manifest, read with column projection) or a `folder`-format
  dataset read in place (`images/<folder>/*` + `taxa.csv`), so users can evaluate on their own photos
  without ingesting them first.
- Two stages: CPU tasks decode and resize + centre-crop to uint8 pixels (open_clip's eval transform
  cut before the float conversion, `linnaeus.clip.preprocess`), then a pool of model actors (four sharing each
  GPU by default) normalises on its device and encodes. Before, fifteen fp32 model actors sharing one
  H100, each decoding its own images, embedded ~960 images/s; split, in bf16, with four actors, ~4,900
  (a million in 4.5 min; docs/benchmarks.md). Actors reserve little CPU (`encode_resources`) so that
  reading and decoding always have room.
- On a GPU the image tower runs under bf16 autocast (as evaluation's text side does); on a CPU in fp32.
- The model is named by a spec (`linnaeus.eval.modelref`), not shipped through Ray: each actor builds it.
- An image that cannot be decoded, or is refused by the checks ingest and the service make (over 50
  megapixels by its header, proportions past 20:1), is skipped with its reason and counted, never
  fatal (docs/reliability.md, "Hostile images"). `embed_local` is the plain loop
  with open_clip's own full transform; a test checks the pipeline agrees with it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
import torch

from linnaeus import images as image_ops
from linnaeus import storage
from linnaeus.clip import towers
from linnaeus.clip.preprocess import eval_crop, eval_pixels, norm_stats
from linnaeus.data import inputs, shards
from linnaeus.eval.modelref import load_model
from linnaeus.taxonomy import RANKS, ROW_COLUMNS, Taxon

META = ["image_id", *RANKS, "common_name", "caption"]
# Fractions so that read, decode and the model actors fit together even on two cores (a stage with
# no CPU left stalls the pipeline silently); on bigger hosts Ray Data runs more decode tasks at once.
READ_CPUS = 0.25
DECODE_CPUS = 0.5
GPU_ACTOR_CPUS = 0.25
# Model actors per GPU by default, the best of those measured (ViT-B/16 on the H100, 150k images:
# 1 actor 3,500 img/s, 2 4,150, 4 4,570; docs/benchmarks.md). Why more actors help was not measured;
# likely one computes while another moves a batch in or its features out.
ACTORS_PER_GPU = 4
PROGRESS_EVERY_S = 30.0

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Normalised image features with each image's taxon and caption (None when it has none)."""

    features: torch.Tensor
    taxa: list[Taxon]
    image_ids: list[str]
    captions: list[str | None]
    skipped: list[dict] = field(default_factory=list)
    precision: str = "fp32"  # of the image tower: bf16 autocast on GPUs


# A folder is read as it is: the same checks as ingest and the service (pixel count from the header,
# so a decompression bomb is refused before it is decoded; extreme proportions; EXIF orientation).
EVAL_IMAGE_LIMITS = image_ops.ImageLimits(max_bytes=2**31, max_pixels=image_ops.DEFAULT_MAX_PIXELS)


@functools.lru_cache(maxsize=4)
def _crop(preprocess_json: str):  # JSON: a hashable key that also travels to Ray tasks as is
    return eval_crop(json.loads(preprocess_json))


def decode_batch(table: pa.Table, preprocess_json: str) -> dict:
    """Rows with image bytes (or paths) -> uint8 pixels, `ok`, `error` and the metadata columns."""
    cols = table.to_pydict()
    blobs = cols["image"] if "image" in cols else [_read(p) for p in cols["path"]]
    crop, size = _crop(preprocess_json), json.loads(preprocess_json)["size"]
    pixels = np.zeros((len(blobs), 3, *size), dtype=np.uint8)
    ok, errors = np.zeros(len(blobs), dtype=bool), np.full(len(blobs), "", dtype=object)
    for i, data in enumerate(blobs):
        try:
            pixels[i] = eval_pixels(image_ops.decode_image(data, EVAL_IMAGE_LIMITS), crop)
            ok[i] = True
        except image_ops.ImageRejected as exc:
            errors[i] = f"{exc.reason}: {exc.detail}"
    meta = {c: np.array([v if v is not None else "" for v in cols[c]], dtype=object) for c in META}
    return {"pixels": pixels, "ok": ok, "error": errors, **meta}


class _Encode:
    """Ray Data actor: decoded pixels -> normalised features (zeros where a row did not decode)."""

    def __init__(self, spec: str, retries: storage.RetryListener | None):
        storage.set_retry_listener(retries)  # the model's reads here count in the job's S3 retries
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(spec)[0].to(self.device).eval()
        self.mean, self.std = norm_stats(self.model.visual.preprocess_cfg, self.device)
        size = self.model.visual.preprocess_cfg["size"]
        self.dim = self._encode(torch.zeros(1, 3, *size, dtype=torch.uint8)).shape[1]

    def _encode(self, pixels: torch.Tensor) -> np.ndarray:
        return towers.encode_pixels(self.model, pixels, self.mean, self.std).numpy()

    def __call__(self, batch: dict) -> dict:
        pixels, ok = batch.pop("pixels"), batch["ok"]
        batch["features"] = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            batch["features"][ok] = self._encode(torch.from_numpy(pixels if ok.all() else pixels[ok]))
        return batch


def _read(path: str) -> bytes:
    try:
        return storage.read_bytes(storage.resolve(path))
    except storage.StorageError:
        return b""  # counted as an undecodable image, with the others


def data_kind(root: storage.Location) -> str:
    """`corpus` (`_manifest.json`) or `folder` (`taxa.csv` + images/); anything else is refused."""
    if storage.exists(root.join(shards.MANIFEST_NAME)):
        return "corpus"
    if storage.exists(root.join(inputs.TAXA_CSV)):
        return "folder"
    raise inputs.InputError(f"{root.uri}: neither a corpus ({shards.MANIFEST_NAME}) nor a folder "
                              f"dataset ({inputs.TAXA_CSV} + images/)")


def source_dataset(data: str, s3: storage.S3Options | None = None) -> ray.data.Dataset:
    """Rows of a corpus (`_manifest.json`) or of a folder-format dataset (`taxa.csv` + images/)."""
    root = storage.resolve(data, s3)
    if data_kind(root) == "corpus":
        manifest = shards.read_manifest(root)
        paths = [manifest.shard_location(root, e).path for e in manifest.shards]
        return ray.data.read_parquet(paths, filesystem=root.fs, columns=["image", *META], num_cpus=READ_CPUS)
    items = [{**item, "path": root.join(item["path"]).uri} for item in inputs.plan_folder(root).items]
    if not items:
        raise inputs.InputError(f"{root.uri}: no image has a taxon in {inputs.TAXA_CSV}")
    return ray.data.from_items(items)


def encode_resources(cluster: dict[str, float], actors: int | None) -> tuple[int, dict]:
    """How many model actors, and what each reserves, so that a read task and a decode task still fit
    beside them: an actor pool that holds every CPU starves its own input and stalls without an error."""
    cpus, gpus = cluster.get("CPU", 0), int(cluster.get("GPU", 0))
    spare = cpus - READ_CPUS - DECODE_CPUS
    if gpus:
        actors = actors or ACTORS_PER_GPU * gpus
        # Mostly waiting on the device: a little CPU each, less on a small host. GPU shares round down
        # (Ray counts in 1e-4) so that ceil(actors / gpus) of them fit on one GPU.
        cpu_each = min(GPU_ACTOR_CPUS, spare / actors)
        extra = {"num_gpus": _round_down(1 / math.ceil(actors / gpus))}
    else:
        actors = max(1, min(actors or 1, int(spare)))  # a CPU model actor computes with a whole core
        cpu_each, extra = min(1.0, spare / actors), {}
    if _round_down(cpu_each) <= 0:
        raise ValueError(f"the Ray cluster has {cpus:g} CPUs: embedding needs {READ_CPUS + DECODE_CPUS:g} to "
                         f"read and decode, and more for {actors} model actor(s)")
    return actors, {"num_cpus": _round_down(cpu_each), **extra}


def _round_down(x: float) -> float:
    return math.floor(x * 10_000) / 10_000


def embed_dataset(data: str, spec: str, preprocess_cfg: dict, actors: int | None = None, batch_size: int = 256,
                 s3: storage.S3Options | None = None) -> EvalSet:
    """Embed every image of `data` with the model `spec` (whose `visual.preprocess_cfg` is given) on
    `actors` model actors: ACTORS_PER_GPU per GPU by default, one on a CPU-only cluster (Ray must be up)."""
    actors, encode = encode_resources(ray.cluster_resources(), actors)
    log.info("embedding %s with %d model actor(s), each %s", data, actors, encode)
    ds = source_dataset(data, s3).map_batches(
        decode_batch, fn_args=(json.dumps(preprocess_cfg),), batch_size=batch_size, batch_format="pyarrow",
        num_cpus=DECODE_CPUS)
    ds = ds.map_batches(_Encode, fn_constructor_args=(spec, storage.retry_listener()), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), **encode)
    data = _collect(ds.iter_batches(batch_format="numpy", batch_size=None),
                    precision="bf16" if "num_gpus" in encode else "fp32")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("embedding pipeline stats:\n%s", ds.stats())
    return data


def _collect(batches, precision: str) -> EvalSet:
    features, taxa, ids, captions, skipped = [], [], [], [], []
    interned: dict[tuple, Taxon] = {}  # a million images share a few thousand taxa
    start = last = time.perf_counter()
    for batch in batches:
        if not features:
            log.info("embedding: first batch after %.0f s", time.perf_counter() - start)
        elif time.perf_counter() - last > PROGRESS_EVERY_S:
            last = time.perf_counter()
            log.info("embedding: %d images done after %.0f s", len(taxa) + len(skipped), last - start)
        ok = batch["ok"]
        features.append(batch["features"][ok])
        for i in np.flatnonzero(~ok):
            skipped.append({"image_id": batch["image_id"][i], "reason": batch["error"][i]})
        for i in np.flatnonzero(ok):
            key = tuple(batch[c][i] or None for c in ROW_COLUMNS)
            taxa.append(interned.get(key) or interned.setdefault(key, Taxon.from_row(dict(zip(ROW_COLUMNS, key)))))
            ids.append(batch["image_id"][i])
            captions.append(batch["caption"][i] or None)
    if not taxa:
        raise ValueError(f"no image could be embedded ({len(skipped)} skipped)")
    return EvalSet(torch.from_numpy(np.concatenate(features)), taxa, ids, captions, skipped, precision)


@torch.no_grad()
def embed_local(rows: list[dict], model: torch.nn.Module) -> torch.Tensor:
    """The reference: a plain loop over rows with `image` bytes through open_clip's own eval transform."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    pixels = torch.stack([transform(image_ops.decode_rgb(r["image"])) for r in rows])
    return model.eval().encode_image(pixels, normalize=True)
