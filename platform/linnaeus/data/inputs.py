"""Ingest inputs: what to read and under which taxon, for the folder, CSV and WebDataset formats (and
the folder format read in place by evaluation).

Notable:
- Planning runs on the driver and touches metadata only (a directory listing, one CSV, the tar list);
  image bytes are read later by Ray tasks. Each plan item is small and picklable.
- Taxonomy problems are found here, before any image is read, and become report entries that name the
  file and line (`taxa.csv:7`), never exceptions: one bad row does not stop a corpus.
- WebDataset tars in the TreeOfLife-10M layout are taken whole by one task each (a tar is a stream);
  their taxonomy prefers the tagged `taxonTag` member, because only it says which rank each word is,
  and a `common_name` equal to the scientific or taxonomic name is BioCLIP's fallback, not a common
  name, so it is dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

from linnaeus import storage
from linnaeus.config import InputFormat
from linnaeus.images import IMAGE_SUFFIXES
from linnaeus.taxonomy import RANKS, Taxon, TaxonomyError, clean_name, parse_tagged

TAXA_CSV = "taxa.csv"

class InputError(ValueError):
    """The input as a whole cannot be planned (missing taxa.csv, no tars, bad CSV header...)."""


@dataclass
class Plan:
    """Work for the Ray tasks (`items`) and what was already refused while planning (`rejects`)."""

    items: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    input_bytes: int = 0  # total size of what items point at (for sizing shards)


def reject(input_ref: str, reason: str, detail: str) -> dict:
    return {"input": input_ref, "reason": reason, "detail": detail}


def _taxon_row(row: dict, where: str) -> Taxon:
    try:
        return Taxon.from_ranks(row, row.get("common_name"))
    except TaxonomyError as exc:
        raise TaxonomyError(f"{where}: {exc}") from None


def read_csv(loc: storage.Location, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    text = storage.read_bytes(loc).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{loc.uri}: missing column(s) {missing}; header is {reader.fieldnames}")
    # Line numbers as an editor shows them (header is line 1).
    return [(i + 2, row) for i, row in enumerate(reader)]


def _item(path: str, image_id: str, taxon: Taxon, caption: object = None) -> dict:
    return {"path": path, "image_id": image_id, **taxon.as_dict(), "caption": clean_name(caption)}


def plan_folder(root: storage.Location) -> Plan:
    """`images/<folder>/*` plus `taxa.csv` (folder, kingdom..species, common_name)."""
    taxa_loc = root.join(TAXA_CSV)
    if not storage.exists(taxa_loc):
        raise InputError(f"{taxa_loc.uri}: not found (the folder format needs taxa.csv beside images/)")
    plan = Plan()
    taxa: dict[str, Taxon] = {}
    bad_folders: dict[str, str] = {}
    for line, row in read_csv(taxa_loc, ("folder", *RANKS)):
        where = f"{TAXA_CSV}:{line}"
        folder = clean_name(row.get("folder"))
        if None in row or None in row.values():  # too many / too few fields on this line
            plan.rejects.append(reject(where, "malformed_taxonomy", "wrong number of fields"))
            if folder:
                bad_folders[folder] = where
            continue
        try:
            taxa[folder or ""] = _taxon_row(row, where)
        except TaxonomyError as exc:
            plan.rejects.append(reject(where, "malformed_taxonomy", str(exc)))
            bad_folders[folder or ""] = where
    images = root.join("images")
    for info in storage.list_files(images, recursive=True):
        rel = info.path[len(images.path.rstrip("/")) + 1:]
        folder = rel.split("/", 1)[0] if "/" in rel else ""
        ref = f"images/{rel}"
        if folder not in taxa:
            why = (f"its folder's taxa.csv row is malformed ({bad_folders[folder]})" if folder in
                   bad_folders else f"folder {folder!r} has no row in taxa.csv")
            plan.rejects.append(reject(ref, "no_taxonomy", why))
            continue
        plan.items.append(_item(ref, rel, taxa[folder]))
        plan.input_bytes += info.size or 0
    if not plan.items and not plan.rejects:
        raise InputError(f"{images.uri}: no images found")
    return plan


def plan_csv(csv_loc: storage.Location) -> Plan:
    """One row per image: `path` (relative to the CSV's folder, absolute, or a URI), ranks, common_name,
    optional `image_id` and `caption`."""
    plan = Plan()
    base = csv_loc.uri.rsplit("/", 1)[0]
    for line, row in read_csv(csv_loc, ("path", *RANKS)):
        where = f"{csv_loc.uri.rsplit('/', 1)[-1]}:{line}"
        path = clean_name(row.get("path"))
        if None in row or None in row.values() or not path:
            plan.rejects.append(reject(where, "malformed_taxonomy",
                                       "wrong number of fields" if path else "empty path"))
            continue
        try:
            taxon = _taxon_row(row, where)
        except TaxonomyError as exc:
            plan.rejects.append(reject(path, "malformed_taxonomy", str(exc)))
            continue
        uri = path if "://" in path or path.startswith("/") else f"{base}/{path}"
        plan.items.append(_item(uri, clean_name(row.get("image_id")) or path, taxon,
                                row.get("caption")))
    return plan


def plan_webdataset(root: storage.Location) -> Plan:
    """Every `*.tar` under the input (or the input itself when it is a tar)."""
    if root.path.endswith(".tar"):
        tars = [root.fs.get_file_info(root.path)]
    else:
        tars = [i for i in storage.list_files(root, recursive=True) if i.path.endswith(".tar")]
    if not tars:
        raise InputError(f"{root.uri}: no .tar shards found")
    plan = Plan()
    for info in tars:
        plan.items.append({"tar": info.path})
        plan.input_bytes += info.size or 0
    return plan


def _members_by_key(data: bytes) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group tar members by WebDataset key (the basename up to its first dot), in tar order."""
    groups: dict[str, dict[str, bytes]] = defaultdict(dict)
    order: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            dirname, _, base = member.name.rpartition("/")
            key, dot, suffix = base.partition(".")
            full_key = f"{dirname}/{key}" if dirname else key
            if full_key not in groups:
                order.append(full_key)
            handle = tar.extractfile(member)
            groups[full_key][suffix.lower()] = handle.read() if handle else b""
    for key in order:
        yield key, groups[key]


def _text(members: dict[str, bytes], name: str) -> str | None:
    raw = members.get(name)
    return clean_name(raw.decode("utf-8", errors="replace")) if raw is not None else None


def webdataset_taxon(members: dict[str, bytes]) -> Taxon:
    """The taxon of one TreeOfLife-style sample; raises TaxonomyError when none can be read."""
    common = _text(members, "common_name.txt")
    tagged = _text(members, "taxontag.txt")
    taxonomic = _text(members, "taxonomic_name.txt")
    if tagged:
        taxon = parse_tagged(tagged)
    elif taxonomic:
        # Without tags a short lineage is ambiguous; read it from the kingdom down, as BioCLIP does.
        taxon = Taxon.from_ranks(dict(zip(RANKS, taxonomic.split(" "))))
    else:
        raise TaxonomyError("no taxonTag.txt or taxonomic_name.txt member")
    fallbacks = {taxon.scientific_name(), taxon.taxonomic_name(), _text(members, "scientific_name.txt")}
    return dataclasses.replace(taxon, common_name=None if common in fallbacks else common)


def read_webdataset_tar(data: bytes, tar_name: str) -> Iterator[dict]:
    """Rows (with `image` bytes) or rejects (with `reason`) for every key of one tar."""
    for key, members in _members_by_key(data):
        ref = f"{tar_name}/{key}"
        image_suffix = next((s for s in members if "." not in s and f".{s}" in IMAGE_SUFFIXES), None)
        if image_suffix is None:
            yield reject(ref, "missing_image", f"no image member among {sorted(members)}")
            continue
        try:
            taxon = webdataset_taxon(members)
        except TaxonomyError as exc:
            yield reject(ref, "malformed_taxonomy", str(exc))
            continue
        yield {**_item(f"{ref}.{image_suffix}", ref, taxon), "image": members[image_suffix]}


def plan_input(loc: storage.Location, fmt: InputFormat) -> Plan:
    return {InputFormat.FOLDER: plan_folder, InputFormat.CSV: plan_csv,
            InputFormat.WEBDATASET: plan_webdataset}[InputFormat(fmt)](loc)
