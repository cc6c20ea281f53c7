"""A corpus (Parquet shards) rewritten as WebDataset tars: `<key>.jpg` + `<key>.txt` per image.

Notable:
- What open_clip's own trainer reads (`--dataset-type webdataset`); the training benchmark uses it to
  run `open_clip_train` on exactly the images Linnaeus trains on.
- One tar per Parquet shard, read a row group at a time, so memory stays at one row group.
- The caption of each image is drawn once (epoch 0) by the same `TextSampler` as the stream: a tar
  holds one caption per image, so the per-epoch redraw of the stream has no equivalent here.
- Keys are the running row number: WebDataset splits a sample's files at the first dot of the name,
  which image ids may contain.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from linnaeus import storage
from linnaeus.data import shards
from linnaeus.text import TextSampler, make_source


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(corpus: str, output: str | Path, text_types: tuple[str, ...] | None = None, seed: int = 0,
                      s3: storage.S3Options | None = None, text_source: str = "taxonomic") -> list[Path]:
    """Write one `NNNNNN.tar` per shard of `corpus` into the local folder `output`; returns the tars."""
    root = storage.resolve(corpus, s3)
    manifest = shards.read_manifest(root)
    source = make_source(text_source)
    sampler = TextSampler(source, text_types or source.kinds, seed=seed)
    columns = ["image", "image_id", *(c for c in source.columns if c not in ("image", "image_id"))]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written, key = [], 0
    for index, entry in enumerate(manifest.shards):
        loc = manifest.shard_location(root, entry)
        path = out / f"{index:06d}.tar"
        with loc.fs.open_input_file(loc.path) as handle, tarfile.open(path, "w") as tar:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                cols = parquet.read_row_group(group, columns=columns).to_pydict()
                captions = sampler.captions_of_rows(cols, cols["image_id"])  # as the stream draws them
                for image, caption in zip(cols["image"], captions):
                    if caption is None:
                        continue
                    _add(tar, f"{key:09d}.jpg", image)
                    _add(tar, f"{key:09d}.txt", caption.encode())
                    key += 1
        written.append(path)
    return written
