"""The evaluation benchmark's corpus: N copies of one real shard (symlinks under a manifest that lists every
copy), so a million-image evaluation needs one shard on disk; and the headline figure of each task."""

from __future__ import annotations

from pathlib import Path

from linnaeus import storage
from linnaeus.data import shards


def replicate(corpus: Path, copies: int, out: Path) -> int:
    """`out` becomes a corpus of `copies` x the single shard of `corpus` (symlinks); returns its rows."""
    manifest = shards.read_manifest(storage.resolve(corpus))
    if len(manifest.shards) != 1:
        raise SystemExit(f"{corpus}: needs a one-shard corpus, found {len(manifest.shards)} shards")
    entry, real = manifest.shards[0], (corpus / manifest.shards[0].path).resolve()
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(copies):
        link = out / f"copy-{i:05d}.parquet"
        if not link.is_symlink():
            link.symlink_to(real)
        entries.append(entry.model_copy(update={"path": link.name}))
    scaled = manifest.model_copy(update={"shards": entries, "rows": entry.rows * copies})
    (out / shards.MANIFEST_NAME).write_text(scaled.model_dump_json())
    return scaled.rows


def headline(task: str, figures: dict) -> dict:
    if task == "zeroshot":
        return {k: figures.get(k) for k in ("classes", "images", "top1", "top5")}
    if task == "fewshot":
        return {k: v.get("mean") for k, v in figures.items()}
    if task == "retrieval":
        return {k: v for k, v in figures.items() if k.endswith("_r1") or k == "texts"}
    return {"images_sampled": figures["images_sampled"], "species": figures["species"]}
