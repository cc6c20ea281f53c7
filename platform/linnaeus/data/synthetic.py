"""A synthetic tree of life: procedurally drawn "organisms" whose looks follow their lineage.

Notable:
- Each rank owns one visual trait, coarse ranks the coarse ones: kingdom -> background tone,
  phylum -> body shape, class -> body hue, order -> number of appendages, family -> pattern kind,
  genus -> accent colour, species -> pattern density and eye size. Two species of a genus differ only
  in fine detail; two kingdoms differ at a glance. A tiny CLIP can learn this on a CPU in minutes, and
  an unseen species shares most of its traits with seen relatives, so zero-shot has something to
  generalise from.
- Names are pronounceable pseudo-Latin, unique per rank, so captions tokenise like real ones.
- Everything is a pure function of the seed: same seed, same bytes.
- Output is the `folder` ingest format (`images/<folder>/*.jpg` + `taxa.csv`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from linnaeus.taxonomy import RANKS, Taxon

_SYLLABLES = ["ca", "lo", "mi", "ra", "ne", "vi", "tu", "phy", "bo", "dra", "xe", "li", "sa", "gor",
              "pel", "mar", "ti", "no", "qua", "zen", "cor", "fa", "lu", "ser", "an", "or", "hel"]
_SUFFIX = {"kingdom": "ia", "phylum": "ata", "class": "ea", "order": "iformes", "family": "idae",
           "genus": "us", "species": "ensis"}
_SHAPES = ["ellipse", "triangle", "diamond", "rectangle", "star", "crescent"]
_PATTERNS = ["stripes", "dots", "rings", "plain", "checks", "bars"]
_ADJECTIVES = ["spotted", "crested", "lesser", "greater", "pale", "dusky", "royal", "tiny",
               "striped", "golden", "silver", "scarlet", "mottled", "hooded"]


@dataclass(frozen=True)
class SyntheticTaxon:
    taxon: Taxon
    path: tuple[int, ...]  # index of the branch taken below each rank (length 7)

    @property
    def folder(self) -> str:
        return f"{self.taxon.genus}_{self.taxon.species}"


def _name(rng: np.random.Generator, rank: str, used: set[str]) -> str:
    while True:
        word = "".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4))) + _SUFFIX[rank]
        word = word if rank == "species" else word.capitalize()
        if word not in used:
            used.add(word)
            return word


# Which ranks branch first as the tree grows: species and genus always, then coarse before fine, so even
# a small corpus has visibly different body shapes (phylum) as well as fine species detail.
_BRANCH_PRIORITY = ("species", "genus", "phylum", "family", "class", "order", "kingdom")


def branching(num_taxa: int) -> dict[str, int]:
    """Children per node at each rank, growing in `_BRANCH_PRIORITY` order until they cover num_taxa."""
    factors = dict.fromkeys(RANKS, 1)
    step = 0
    while math.prod(factors.values()) < num_taxa:
        factors[_BRANCH_PRIORITY[step % len(_BRANCH_PRIORITY)]] += 1
        step += 1
    return factors


def make_tree(num_taxa: int, seed: int = 0) -> list[SyntheticTaxon]:
    """`num_taxa` species; siblings share as many ranks as the branching allows; names by seed."""
    rng = np.random.default_rng(seed)
    factors = [branching(num_taxa)[r] for r in RANKS]
    names: dict[tuple[int, ...], str] = {}
    used: dict[str, set[str]] = {r: set() for r in RANKS}
    out: list[SyntheticTaxon] = []
    for i in range(num_taxa):
        digits, rest = [], i
        for factor in reversed(factors):  # mixed radix, species digit least significant
            digits.append(rest % factor)
            rest //= factor
        digits = tuple(reversed(digits))
        lineage = []
        for level, rank in enumerate(RANKS):
            prefix = digits[: level + 1]
            if prefix not in names:
                names[prefix] = _name(rng, rank, used[rank])
            lineage.append(names[prefix])
        common = f"{_ADJECTIVES[digits[-1] % len(_ADJECTIVES)]} {lineage[5].lower()[:-2]}" \
                 f"{'-' + lineage[4].lower()[:4] if digits[-2] % 2 else ''}"
        out.append(SyntheticTaxon(Taxon.from_ranks(dict(zip(RANKS, lineage)), common), digits))
    return out


def _colour(h: float, s: float = 0.7, v: float = 0.85) -> tuple[int, int, int]:
    i, f = int(h * 6) % 6, (h * 6) % 1
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(255 * c) for c in rgb)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    spec = {"triangle": (3, 1.0), "diamond": (4, 1.0), "rectangle": (4, 0.0), "star": (10, 0.45),
            "crescent": (24, 0.0), "ellipse": (32, 0.0)}[shape]
    points = []
    for k in range(spec[0]):
        a = angle + 2 * math.pi * k / spec[0] + (math.pi / 4 if shape == "rectangle" else 0)
        rad = r * (spec[1] if shape == "star" and k % 2 else 1.0)
        if shape == "crescent":
            rad = r * (0.55 + 0.45 * abs(math.cos(a - angle)))
        sx = 1.0 if shape != "ellipse" else 1.35
        points.append((cx + rad * sx * math.cos(a), cy + rad * math.sin(a)))
    return points


def draw(taxon: SyntheticTaxon, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """One image of one organism: traits from the lineage, pose and noise from `rng`."""
    k, p, c, o, f, g, s = taxon.path
    img = Image.new("RGB", (size, size), _colour(0.1 + 0.5 * k, 0.25, 0.55 + 0.3 * k))
    d = ImageDraw.Draw(img)
    cx, cy = size * rng.uniform(0.38, 0.62), size * rng.uniform(0.38, 0.62)
    r, angle = size * rng.uniform(0.22, 0.3), rng.uniform(0, 2 * math.pi)
    body = _colour((0.13 * p + 0.31 * c + 0.05 * rng.random()) % 1.0)
    accent = _colour((0.5 + 0.23 * g + 0.11 * f) % 1.0, 0.9, 0.95)
    for a in range(2 + 2 * (o % 3) + o // 3):  # appendages
        theta = angle + 2 * math.pi * a / (2 + 2 * (o % 3) + o // 3)
        d.line([(cx, cy), (cx + 1.6 * r * math.cos(theta), cy + 1.6 * r * math.sin(theta))],
               fill=accent, width=max(2, size // 40))
    outline = _polygon(_SHAPES[(p + 2 * k) % len(_SHAPES)], cx, cy, r, angle)
    d.polygon(outline, fill=body)
    pattern, density = _PATTERNS[(f + 3 * c) % len(_PATTERNS)], 3 + 2 * s
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    layer = Image.new("RGB", (size, size), accent)
    marks = Image.new("L", (size, size), 0)
    md = ImageDraw.Draw(marks)
    step = max(3, int(2 * r / density))
    for i in range(-size, 2 * size, step):
        if pattern in ("stripes", "checks"):
            md.line([(i, 0), (i + size, size)], fill=255, width=max(1, step // 3))
        if pattern in ("bars", "checks"):
            md.line([(0, i), (size, i)], fill=255, width=max(1, step // 3))
        if pattern == "dots":
            for j in range(0, size, step):
                md.ellipse([i, j, i + step // 2, j + step // 2], fill=255)
        if pattern == "rings":
            md.ellipse([cx - i / 2, cy - i / 2, cx + i / 2, cy + i / 2], outline=255, width=2)
    img.paste(layer, (0, 0), Image.fromarray(np.minimum(np.asarray(mask), np.asarray(marks))))
    eye = r * (0.12 + 0.1 * s)
    ex, ey = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
    d.ellipse([ex - eye, ey - eye, ex + eye, ey + eye], fill=(250, 250, 250), outline=(10, 10, 10))
    noise = rng.normal(0, 8, (size, size, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.SMOOTH)


def write_folder_corpus(out_dir: str | Path, num_taxa: int = 16, images_per_taxon: int = 20,
                        seed: int = 0, size: int = 96) -> list[SyntheticTaxon]:
    """Write `images/<genus_species>/NNNN.jpg` and `taxa.csv` under `out_dir`; returns the taxa."""
    out = Path(out_dir)
    tree = make_tree(num_taxa, seed)
    rows = []
    for t_index, taxon in enumerate(tree):
        folder = out / "images" / taxon.folder
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, t_index])
        for i in range(images_per_taxon):
            buf = io.BytesIO()
            draw(taxon, rng, size).save(buf, format="JPEG", quality=90)
            (folder / f"{i:04d}.jpg").write_bytes(buf.getvalue())
        rows.append({"folder": taxon.folder, **taxon.taxon.as_dict()})
    with open(out / "taxa.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["folder", *RANKS, "common_name"])
        writer.writeheader()
        writer.writerows(rows)
    return tree


def split_off(out_dir: str | Path, heldout_dir: str | Path, count: int, seed: int = 0) -> list[str]:
    """Move `count` taxa (chosen by seed) of a folder corpus into a second folder corpus, for evaluating
    on taxa a model never saw; returns the moved folders."""
    out, held = Path(out_dir), Path(heldout_dir)
    with open(out / "taxa.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not 0 < count < len(rows):
        raise ValueError(f"cannot hold out {count} of {len(rows)} taxa")
    moved = set(np.random.default_rng(seed).choice(len(rows), size=count, replace=False).tolist())
    (held / "images").mkdir(parents=True, exist_ok=True)
    for i in sorted(moved):
        (out / "images" / rows[i]["folder"]).rename(held / "images" / rows[i]["folder"])
    for folder, keep in ((out, [r for i, r in enumerate(rows) if i not in moved]),
                         (held, [rows[i] for i in sorted(moved)])):
        with open(folder / "taxa.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["folder", *RANKS, "common_name"])
            writer.writeheader()
            writer.writerows(keep)
    return [rows[i]["folder"] for i in sorted(moved)]
