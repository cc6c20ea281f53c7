"""Batch jobs SIGKILLed half-way, then run again: ingest and bulk prediction drivers run as real
processes (`jobs/*.py`) that join this module's Ray through RAY_ADDRESS, as under `ray job submit`, and
are killed with SIGKILL as soon as their first output file appears. What must hold: the corpus and the
predictions are complete and exact after the re-run, and no reader ever saw a partial corpus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from linnaeus.data import shards

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 8 * 40  # the corpus below


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from linnaeus.data.synthetic import write_folder_corpus

    out = tmp_path_factory.mktemp("faults-photos")
    write_folder_corpus(out, num_taxa=8, images_per_taxon=40, seed=9, size=64)
    return out


@pytest.fixture(scope="module")
def address(ray_local) -> str:
    return ray_local.get_runtime_context().gcs_address


def _start(job: str, argv: list[str], address: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / f"{job}.py"), *argv], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> float:
    """SIGKILL `proc` as soon as `ready()`; returns when (seconds after start). Fails if it ended first."""
    start = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before it could be killed half-way"
        assert time.monotonic() - start < timeout, "the job produced no output in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return time.monotonic() - start


class ManifestWatcher(threading.Thread):
    """Polls the corpus folder as a reader would: every manifest it ever sees must parse and name only
    shards that exist (a half-written manifest, or one ahead of its shards, would fail a training run)."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.seen, self.problems, self.done = folder, 0, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            path = self.folder / shards.MANIFEST_NAME
            try:
                text = path.read_text()
            except FileNotFoundError:
                time.sleep(0.005)
                continue
            self.seen += 1
            try:
                listed = [s["path"] for s in json.loads(text)["shards"]]
                missing = [p for p in listed if not (self.folder / p).exists()]
                if missing:
                    self.problems.append(f"manifest names missing shards {missing[:3]}")
            except (ValueError, KeyError) as exc:
                self.problems.append(f"unreadable manifest: {exc}")
            time.sleep(0.005)


def test_ingest_killed_half_way_then_rerun_gives_the_exact_corpus_and_no_partial_manifest_is_ever_seen(
        photos, address, tmp_path, load_job):
    out = tmp_path / "corpus"
    out.mkdir()
    watcher = ManifestWatcher(out)
    watcher.start()
    argv = ["--input", str(photos), "--format", "folder", "--output", str(out), "--shard-rows", "16"]
    proc = _start("ingest", argv, address, tmp_path / "ingest.log")
    killed_after = _kill_when(proc, lambda: any(out.glob("part-*.parquet")))
    orphans = sorted(p.name for p in out.glob("part-*.parquet"))
    assert orphans and not (out / shards.MANIFEST_NAME).exists()  # killed between its first shard and its commit
    with pytest.raises(shards.CorpusError, match="_manifest.json"):
        shards.read_manifest(_location(out))  # a reader is told there is no corpus, not given half of one

    assert load_job("ingest").main(argv) == 0
    deadline = time.monotonic() + 10
    while watcher.seen == 0 and time.monotonic() < deadline:  # let it read the committed manifest too
        time.sleep(0.01)
    watcher.done.set()
    watcher.join()
    manifest = shards.read_manifest(_location(out))
    ids = [r for s in manifest.shards for r in pq.read_table(out / s.path, columns=["image_id"]).column(0).to_pylist()]
    assert manifest.rows == len(ids) == len(set(ids)) == IMAGES
    on_disk = {p.name for p in out.glob("part-*.parquet")}
    assert on_disk == {s.path for s in manifest.shards} and not on_disk & set(orphans)
    report = json.loads((out / shards.REPORT_NAME).read_text())
    assert sorted(report["stale_shards_deleted"]) == orphans
    assert watcher.problems == [] and watcher.seen > 0
    print(f"ingest: killed after {killed_after:.1f} s with {len(orphans)} shards written")  # figures for the docs


def _location(folder: Path):
    from linnaeus import storage

    return storage.resolve(str(folder))


def test_bulk_prediction_killed_half_way_then_rerun_writes_every_row_once(photos, address, tmp_path, load_job):
    from linnaeus.clip.exports import export_model
    from linnaeus.clip.models import create_model

    model = str(tmp_path / "model")
    export_model(create_model("linnaeus-tiny", seed=0), "linnaeus-tiny", model)
    labels = tmp_path / "labels.txt"
    labels.write_text("a red shape\na blue shape\n")
    out = tmp_path / "pred"
    argv = ["--model", model, "--input", str(photos / "images"), "--output", str(out), "--labels", str(labels),
            "--k", "1", "--batch-size", "8"]
    proc = _start("predict", argv, address, tmp_path / "predict.log")
    killed_after = _kill_when(proc, lambda: any(out.glob("*.parquet")))
    partial = len(list(out.glob("*.parquet")))
    assert (out / "_started.json").exists() and not (out / "_report.json").exists()

    assert load_job("predict").main(argv) == 0
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert len(paths) == len(set(paths)) == IMAGES
    report = json.loads((out / "_report.json").read_text())
    assert (report["images"], report["predicted"]) == (IMAGES, IMAGES) and not (out / "_started.json").exists()
    print(f"predict: killed after {killed_after:.1f} s with {partial} files written")

