"""The stream benchmark's measurements: the per-row work on one core without Ray, and the Ray Data
stream end to end on every CPU Ray has, consumed as a train worker consumes it."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from linnaeus import storage
from linnaeus.config import StreamConfig
from linnaeus.data import shards
from linnaeus.data.loader import iter_train_batches
from linnaeus.data.stream import Preprocess, build_stream, read_columns


def single_core(corpus: Path, cfg: StreamConfig, rows: int) -> float:
    """Rows/s of the stream's own per-row work (`Preprocess`) in this process: no Ray, one core."""
    manifest = shards.read_manifest(storage.resolve(corpus))
    table = pa.concat_tables([pq.read_table(corpus / e.path, columns=read_columns(cfg))
                              for e in manifest.shards]).slice(0, rows)
    for name in ("epoch", "position"):
        table = table.append_column(name, pa.array([0] * table.num_rows, pa.int64()))
    preprocess = Preprocess(cfg, counter=None)  # the counter is only called when a row is skipped
    preprocess(table.slice(0, 8))  # load the tokenizer and transforms outside the timing
    start = time.perf_counter()
    for offset in range(0, table.num_rows, cfg.preprocess_batch):
        preprocess(table.slice(offset, cfg.preprocess_batch))
    return table.num_rows / (time.perf_counter() - start)


def streamed(cfg: StreamConfig, epochs: int, batch_size: int, stats_path: Path,
             consumer: str = "loader") -> dict:
    """consumer="loader": batches as a trainer takes them (tensors on its device, decoded/normalised);
    "raw": numpy batches as Ray Data delivers them, to tell the pipeline's rate from the consumer's."""
    stream = build_stream(cfg, epochs=epochs)
    iterator = stream.dataset.iterator()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where a trainer would take the batches
    batches = (iter_train_batches(iterator, cfg, batch_size, device=device, drop_last=False)
               if consumer == "loader" else
               iterator.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=False))
    start, first, rows, first_rows = time.perf_counter(), None, 0, 0
    for batch in batches:
        rows += len(batch["sample_key"])
        if first is None:  # worker start-up (imports torch/open_clip) is paid once per run
            first, first_rows = time.perf_counter() - start, rows
    seconds = time.perf_counter() - start
    stats_path.write_text(iterator.stats())  # Ray Data's per-operator timings, for finding the limit
    steady = (rows - first_rows) / max(1e-9, seconds - first)
    cpus = ray.cluster_resources().get("CPU", 1)
    return {"consumer": consumer, "rows": rows, "seconds": round(seconds, 2), "first_batch_s": round(first or 0, 2),
            "rows_per_s": round(rows / seconds, 1), "cpus": cpus,
            "steady_rows_per_s": round(steady, 1), "steady_rows_per_s_per_cpu": round(steady / cpus, 1),
            "skipped": stream.skipped()["skipped"]}
