"""Evaluation reports: `results.json` (every figure with its settings), `report.md` (tables), PNGs.

Notable:
- One column per model, so a comparison (trained vs its initialisation, two text types, ...) reads
  across a row. Figures are percentages with one decimal; few-shot shows mean +- std over the seeds.
"""

from __future__ import annotations

import json

from linnaeus import storage
from linnaeus.config import EvalConfig
from linnaeus.taxonomy import RANKS


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _get(result: dict, *path, default=None):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return default
        result = result[key]
    return result


def rows(results: dict[str, dict], cfg: EvalConfig) -> list[tuple[str, list[str]]]:
    """(label, one cell per model) for every headline figure."""
    models = list(results.values())
    out = []
    if "zeroshot" in cfg.tasks:
        for k in ("top1", "top5"):
            text = "text type per column" if cfg.compare_text_type else cfg.text_type.value
            out.append((f"zero-shot {cfg.rank} {k} ({text}, {cfg.templates} templates)",
                        [_pct(_get(m, "zeroshot", k)) for m in models]))
        for rank in RANKS[: RANKS.index(cfg.rank) + 1]:
            out.append((f"zero-shot at {rank}, via predicted {cfg.rank} / direct",
                        [f"{_pct(_get(m, 'zeroshot', 'per_rank_via_prediction', rank, 'top1'))} / "
                         f"{_pct(_get(m, 'zeroshot', 'per_rank_direct', rank, 'top1'))}" for m in models]))
    if "fewshot" in cfg.tasks:
        for k in cfg.shots:
            out.append((f"{k}-shot {cfg.rank} (SimpleShot, {cfg.seeds} seeds)",
                        [_fewshot(_get(m, "fewshot", f"{k}-shot", default={})) for m in models]))
    if "retrieval" in cfg.tasks:
        for key in ("image_to_text_r1", "image_to_text_r5", "text_to_image_r1", "text_to_image_r5"):
            out.append((f"retrieval {key.replace('_', ' ')}", [_pct(_get(m, "retrieval", key)) for m in models]))
    if "hierarchy" in cfg.tasks:
        for rank in RANKS:
            out.append((f"{cfg.knn}-NN share of same {rank} (chance)",
                        [f"{_pct(_get(m, 'hierarchy', rank, 'agreement'))} "
                         f"({_pct(_get(m, 'hierarchy', rank, 'chance'))})" for m in models]))
    return out


def _fewshot(r: dict) -> str:
    return r.get("note", "-") if "mean" not in r else f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f}"


def markdown(results: dict[str, dict], cfg: EvalConfig) -> str:
    names = list(results)
    first = next(iter(results.values()))
    lines = [f"# Evaluation on {cfg.data}", "",
             f"{first['images']} images ({first['skipped_images']} skipped); classes at {cfg.rank}; "
             f"figures in %.", "",
             "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows(results, cfg)]
    notes = fallback_notes(results)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def fallback_notes(results: dict[str, dict]) -> list[str]:
    """A sentence per column whose zero-shot class names could not all be written in the asked text type
    (rows without a common name, say); nothing when every class could."""
    notes = []
    for name, result in results.items():
        z = result.get("zeroshot") or {}
        fell = z.get("names_fallen_back_to_taxonomic", 0)
        if fell:
            notes.append(f"Zero-shot, {name}: {fell} of {z['classes']} classes lack the parts of the "
                         f"{z.get('text_type', 'asked')} text type (no common name in the data), so their "
                         "class text is the taxonomic name instead.")
    return notes


def write(results: dict[str, dict], pngs: dict[str, bytes], cfg: EvalConfig,
          storage_retries: dict | None = None) -> storage.Location:
    out = storage.resolve(cfg.output, cfg.s3)
    storage.ensure_bucket(out)
    settings = cfg.model_dump(mode="json", exclude={"s3"})
    body = {"settings": settings, "models": results, "storage_retries": storage_retries}
    storage.write_bytes(out.join("results.json"), json.dumps(body, indent=1).encode())
    storage.write_bytes(out.join("report.md"), markdown(results, cfg).encode())
    for name, data in pngs.items():
        storage.write_bytes(out.join(f"{name}.png"), data)
    return out
