"""Bulk prediction: every image under a folder or bucket through model actors, top-k per image to files.

Notable:
- Files are listed on the driver (paths only); bytes are read by Ray Data tasks and decoded in the
  actors, so memory stays bounded by Ray Data's streaming window however many images there are.
- Output rows are flat, one per input file, CSV-friendly: `path`, `error` (empty when predicted), and
  `name_i`, `probability_i` for i = 1..k (plus `lineage_i`, `common_name_i` for taxa). A file that
  cannot be decoded gets its row with the reason and no answers: nothing is lost silently.
- Files whose names are not images (`.json`, `.txt`, ...) are not read; they are counted in the report.
- `_report.json`, written last, has counts by outcome and reason and the first 1,000 skipped files.
- A run killed half-way leaves `_started.json` beside its partial files: the folder is still known as
  a predictions output, and a re-run clears it and writes everything again (no row twice, none lost).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
import torch

from linnaeus import runtime, storage
from linnaeus.config import PredictConfig
from linnaeus.images import IMAGE_SUFFIXES, ImageLimits, ImageRejected, decode_image
from linnaeus.serving.predictor import Predictor

REPORT_NAME = "_report.json"
STARTED_NAME = "_started.json"  # present from before the first prediction file until the report is written
READ_CPUS = 0.25
log = logging.getLogger(__name__)


def output_schema(k: int, taxa: bool) -> pa.Schema:
    fields = [pa.field("path", pa.string()), pa.field("error", pa.string())]
    for i in range(1, k + 1):
        fields += [pa.field(f"name_{i}", pa.string()), pa.field(f"probability_{i}", pa.float32())]
        if taxa:
            fields += [pa.field(f"lineage_{i}", pa.string()), pa.field(f"common_name_{i}", pa.string())]
    return pa.schema(fields)


class _Predict:
    def __init__(self, cfg: PredictConfig, retries: storage.RetryListener | None):
        storage.set_retry_listener(retries)  # the model and bank reads made here count in the job's retries
        self.cfg = cfg
        self.predictor = Predictor(cfg.model, cfg.bank, s3=cfg.s3)
        self.limits = ImageLimits(max_bytes=2**40, max_pixels=cfg.max_image_pixels)
        self.schema = output_schema(cfg.k, taxa=cfg.labels is None)

    def __call__(self, table: pa.Table) -> pa.Table:
        paths, blobs = table.column("path").to_pylist(), table.column("bytes").to_pylist()
        pixels, kept, errors = [], [], {}
        for i, data in enumerate(blobs):
            try:
                pixels.append(self.predictor.pixels(decode_image(data, self.limits)))
                kept.append(i)
            except ImageRejected as exc:
                errors[i] = f"{exc.reason}: {exc.detail}"[:300]
        answers = self._answer(torch.stack(pixels)) if pixels else []
        by_row = dict(zip(kept, answers))
        rows = [{"path": p, "error": errors.get(i, ""), **self._flat(by_row.get(i, []))}
                for i, p in enumerate(paths)]
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _answer(self, pixels: torch.Tensor) -> list[list[dict]]:
        features = self.predictor.encode_pixels(pixels)
        cfg = self.cfg
        if cfg.labels is not None:
            return self.predictor.classify_features(features, cfg.labels, cfg.k, cfg.templates)
        return self.predictor.predict_features(features, cfg.rank, cfg.k, cfg.subset)

    def _flat(self, answers: list[dict]) -> dict:
        out = {}
        for i, a in enumerate(answers, start=1):
            out[f"name_{i}"] = a.get("label") or a.get("name")
            out[f"probability_{i}"] = a["probability"]
            if "lineage" in a:
                out[f"lineage_{i}"] = " ".join(v for v in a["lineage"].values() if v)
                out[f"common_name_{i}"] = a["common_name"]
        return out


def list_images(root: storage.Location) -> tuple[list[str], list[str]]:
    """(image paths, other files) under `root`, recursively; names starting with `_` or `.` are skipped."""
    images, others = [], []
    for info in storage.list_files(root, recursive=True):
        name = info.path.rsplit("/", 1)[-1]
        if name.startswith(("_", ".")):
            continue
        (images if name.lower().endswith(IMAGE_SUFFIXES) else others).append(info.path)
    return images, others


def check_output(cfg: PredictConfig) -> None:
    """A run empties its output folder first: refuse one that holds or is inside the input, and a
    non-empty one that is not an earlier predictions output, finished (`_report.json`) or interrupted
    (`_started.json`)."""
    root, out = storage.resolve(cfg.input, cfg.s3), storage.resolve(cfg.output, cfg.s3)
    a, b = root.uri.rstrip("/") + "/", out.uri.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise ValueError(f"--output {out.uri} overlaps --input {root.uri}: the output folder is emptied first")
    ours = storage.exists(out.join(REPORT_NAME)) or storage.exists(out.join(STARTED_NAME))
    if storage.list_files(out) and not ours:
        raise ValueError(f"--output {out.uri} holds files and is not an earlier predictions output "
                         f"(no {REPORT_NAME} or {STARTED_NAME}); it would be emptied: choose an empty or new folder")


def _start(out: storage.Location, cfg: PredictConfig) -> int:
    """Mark the folder as a predictions output in progress, then clear an earlier run's files (finished
    or interrupted): the marker first, so a kill in between still leaves the folder known as ours."""
    storage.write_bytes(out.join(STARTED_NAME), json.dumps({"input": cfg.input, "started": time.time()}).encode())
    earlier = [i for i in storage.list_files(out) if not i.path.endswith("/" + STARTED_NAME)]
    for info in earlier:
        storage.delete(storage.Location(out.fs, info.path, out.join(info.base_name).uri))
    return len(earlier)


def run_predict(cfg: PredictConfig) -> dict:
    """Predict every image under `cfg.input` into `cfg.output` (Ray must be up); returns the report."""
    with runtime.storage_retries() as retries:
        return _predict(cfg, retries)


def _predict(cfg: PredictConfig, retries: runtime.StorageRetries) -> dict:
    check_output(cfg)  # the write below empties the output folder
    start = time.perf_counter()
    root, out = storage.resolve(cfg.input, cfg.s3), storage.resolve(cfg.output, cfg.s3)
    images, others = list_images(root)
    if not images:
        raise FileNotFoundError(f"{root.uri}: no image files (by name: {', '.join(IMAGE_SUFFIXES)})")
    storage.ensure_bucket(out)
    cleared = _start(out, cfg)
    if cleared:
        log.info("%s: %d files of an earlier or interrupted run cleared", out.uri, cleared)
    gpus = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {}
    ds = ray.data.read_binary_files(images, filesystem=root.fs, include_paths=True, num_cpus=READ_CPUS)
    ds = ds.map_batches(_Predict, fn_constructor_args=(cfg, storage.retry_listener()), batch_size=cfg.batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.actors),
                        num_cpus=1 if gpus else 0.5, **gpus)
    write = ds.write_parquet if cfg.format == "parquet" else ds.write_csv
    write(out.path, filesystem=out.fs, mode="append")
    report = _report(out, cfg.format, others, time.perf_counter() - start)
    report["storage_retries"] = retries.report()  # the report's own write is not in it: it comes next
    storage.write_bytes(out.join(REPORT_NAME), json.dumps(report, indent=1).encode())
    storage.delete(out.join(STARTED_NAME))
    return report


def _report(out: storage.Location, fmt: str, others: list[str], seconds: float) -> dict:
    reasons, skipped, rows = Counter(), [], 0
    for info in storage.list_files(out):
        if not info.path.endswith(f".{fmt}"):
            continue
        if fmt == "parquet":
            table = pq.read_table(info.path, filesystem=out.fs, columns=["path", "error"])
        else:
            with out.fs.open_input_stream(info.path) as f:
                table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                    include_columns=["path", "error"], column_types={"error": pa.string()},
                    strings_can_be_null=False))
        rows += len(table)
        for path, error in zip(table.column("path").to_pylist(), table.column("error").to_pylist()):
            if error:
                reasons[error.split(":", 1)[0]] += 1
                if len(skipped) < 1000:
                    skipped.append({"path": path, "reason": error})
    return {"output": out.uri, "images": rows, "predicted": rows - sum(reasons.values()),
            "skipped": sum(reasons.values()), "skipped_by_reason": dict(reasons), "skipped_files": skipped,
            "not_image_files": len(others), "not_image_examples": others[:100], "seconds": round(seconds, 2)}
