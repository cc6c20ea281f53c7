"""Image features at scale: a Ray Data batch-inference pipeline over a corpus or an image folder.

Notable:
- Input is a Linnaeus corpus (shards + manifest, read with column projection) or a `folder`-format
  dataset read in place (`images/<folder>/*` + `taxa.csv`), so users can evaluate on their own photos
  without ingesting them first.
- The model is named by a spec (`linnaeus.eval.modelref`), not shipped through Ray: each actor of the
  pool builds it once and embeds batches with open_clip's own evaluation transform (resize, centre
  crop, normalise). Actors decode on their own CPU; with GPUs, the actors share them (`--actors 12` on
  one GPU: twelve decoders, each with a model copy on the GPU).
- An image that cannot be decoded is skipped and counted, never fatal. `embed_local` is the same
  computation as a plain loop; a test checks the two agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
import torch

from linnaeus import storage
from linnaeus.data import images as image_ops
from linnaeus.data import shards, sources
from linnaeus.eval.modelref import build_model
from linnaeus.taxonomy import RANKS, Taxon

META = ["image_id", *RANKS, "common_name", "caption"]
READ_CPUS = 0.25


@dataclass
class EvalSet:
    """Normalised image features with each image's taxon and caption (None when it has none)."""

    features: torch.Tensor
    taxa: list[Taxon]
    image_ids: list[str]
    captions: list[str | None]
    skipped: list[dict] = field(default_factory=list)


@functools.lru_cache(maxsize=2)
def eval_transform(model: torch.nn.Module):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


@torch.no_grad()
def embed_pixels(model, pixels: torch.Tensor, device: str | torch.device) -> np.ndarray:
    features = model.encode_image(pixels.to(device), normalize=True)
    return features.float().cpu().numpy()


def _tensors(model, blobs: list[bytes]) -> tuple[torch.Tensor | None, list[int], list[str]]:
    transform, kept, pixels, errors = eval_transform(model), [], [], []
    for i, data in enumerate(blobs):
        try:
            pixels.append(transform(image_ops.decode_rgb(data)))
            kept.append(i)
        except image_ops.ImageRejected as exc:
            errors.append(f"{exc.reason}: {exc.detail}")
    return (torch.stack(pixels) if pixels else None), kept, errors


class _Embed:
    """Ray Data actor: rows with image bytes (or paths) -> features + metadata; `ok` marks decodable."""

    def __init__(self, spec: str):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = build_model(spec)[0].to(self.device).eval()
        size = self.model.visual.preprocess_cfg["size"]
        self.dim = embed_pixels(self.model, torch.zeros(1, 3, *size), self.device).shape[1]

    def __call__(self, table: pa.Table) -> dict:
        cols = table.to_pydict()
        blobs = cols["image"] if "image" in cols else [_read(p) for p in cols["path"]]
        pixels, kept, errors = _tensors(self.model, blobs)
        features = np.zeros((len(blobs), self.dim), dtype=np.float32)
        if pixels is not None:
            features[kept] = embed_pixels(self.model, pixels, self.device)
        ok = np.zeros(len(blobs), dtype=bool)
        ok[kept] = True
        reasons = iter(errors)
        return {"features": features, "ok": ok,
                "error": np.array(["" if k else next(reasons) for k in ok], dtype=object),
                **{c: np.array([v if v is not None else "" for v in cols[c]], dtype=object) for c in META}}


def _read(path: str) -> bytes:
    try:
        return storage.read_bytes(storage.resolve(path))
    except storage.StorageError:
        return b""  # counted as an undecodable image, with the others


def data_kind(root: storage.Location) -> str:
    """`corpus` (`_manifest.json`) or `folder` (`taxa.csv` + images/); anything else is refused."""
    if storage.exists(root.join(shards.MANIFEST_NAME)):
        return "corpus"
    if storage.exists(root.join(sources.TAXA_CSV)):
        return "folder"
    raise sources.SourceError(f"{root.uri}: neither a corpus ({shards.MANIFEST_NAME}) nor a folder "
                              f"dataset ({sources.TAXA_CSV} + images/)")


def source_dataset(data: str, s3: storage.S3Options | None = None) -> ray.data.Dataset:
    """Rows of a corpus (`_manifest.json`) or of a folder-format dataset (`taxa.csv` + images/)."""
    root = storage.resolve(data, s3)
    if data_kind(root) == "corpus":
        manifest = shards.read_manifest(root)
        paths = [manifest.shard_location(root, e).path for e in manifest.shards]
        # Reading is light next to the model: a quarter CPU per read task, so a pool of embedding actors
        # that holds every whole CPU cannot starve its own input (the pipeline would stall silently).
        return ray.data.read_parquet(paths, filesystem=root.fs, columns=["image", *META], num_cpus=READ_CPUS)
    items = [{**item, "path": root.join(item["path"]).uri} for item in sources.plan_folder(root).items]
    if not items:
        raise sources.SourceError(f"{root.uri}: no image has a taxon in {sources.TAXA_CSV}")
    return ray.data.from_items(items)


def embed_images(data: str, spec: str, actors: int = 1, batch_size: int = 64,
                 s3: storage.S3Options | None = None) -> EvalSet:
    """Embed every image of `data` with the model `spec` on a pool of `actors` (Ray must be up)."""
    resources = ray.cluster_resources()
    # Every actor decodes its own images on its CPU, so several actors share a GPU (each holds a copy
    # of the model) to keep it fed; CPU actors leave room for the read tasks.
    actors = max(1, min(actors, int(resources.get("CPU", 1) - READ_CPUS)))
    gpus = {"num_gpus": min(1.0, resources["GPU"] / actors)} if resources.get("GPU", 0) >= 1 else {}
    ds = source_dataset(data, s3).map_batches(
        _Embed, fn_constructor_args=(spec,), batch_size=batch_size, batch_format="pyarrow",
        num_cpus=1, compute=ray.data.ActorPoolStrategy(size=actors), **gpus)
    return _collect(ds.iter_batches(batch_format="numpy", batch_size=None))


def _collect(batches) -> EvalSet:
    features, taxa, ids, captions, skipped = [], [], [], [], []
    for batch in batches:
        for i, ok in enumerate(batch["ok"]):
            if not ok:
                skipped.append({"image_id": batch["image_id"][i], "reason": batch["error"][i]})
                continue
            features.append(batch["features"][i])
            taxa.append(Taxon(*(batch[r][i] or None for r in RANKS), common_name=batch["common_name"][i] or None))
            ids.append(batch["image_id"][i])
            captions.append(batch["caption"][i] or None)
    if not features:
        raise ValueError(f"no image could be embedded ({len(skipped)} skipped)")
    return EvalSet(torch.from_numpy(np.stack(features)), taxa, ids, captions, skipped)


def embed_local(rows: list[dict], model: torch.nn.Module) -> torch.Tensor:
    """The reference: the same features from a plain loop over rows with `image` bytes."""
    model = model.eval()
    pixels, kept, _ = _tensors(model, [r["image"] for r in rows])
    return torch.from_numpy(embed_pixels(model, pixels, "cpu"))
