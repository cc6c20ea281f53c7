"""Shared fixtures: generated corpora (never the shared photos copied in), a local Ray per module."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.credentials import find_leaks, ray_session_logs, scan_files

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Ray's metrics thread (opencensus' harvester) was seen aborting a worker with SIGABRT on the GPU host,
# and one local run lost its pytest process without a trace; the tests need no Ray metrics, so the
# thread is not started. Set before any ray.init, and inherited by the workers.
os.environ.setdefault("RAY_enable_metrics_collection", "0")


# --- credentials never reach a log: every test's captured output, then the run's Ray logs ---------------
_RUN_STARTED = time.time()
_LEAKS: list[str] = []


def pytest_runtest_logreport(report):
    texts = [content for _, content in report.sections]
    if report.longrepr:
        texts.append(str(report.longrepr))
    _LEAKS.extend(find_leaks("\n".join(texts), f"{report.nodeid} ({report.when})"))


def pytest_sessionfinish(session, exitstatus):
    leaks = _LEAKS + scan_files(ray_session_logs(since=_RUN_STARTED - 5))
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["a credential reached a log (tests/credentials.py):", *leaks[:50]]
        if reporter:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    """A small synthetic corpus in the folder format: 8 taxa x 12 images of 64 px."""
    from linnaeus.data.synthetic import write_folder_corpus

    out = tmp_path_factory.mktemp("synthetic")
    write_folder_corpus(out, num_taxa=8, images_per_taxon=12, seed=3, size=64)
    return out


@pytest.fixture(scope="session")
def ingest_synthetic(synthetic_folder, tmp_path_factory):
    """`ingest_synthetic(shard_rows)`: the synthetic folder ingested into a local corpus (one per shard
    size, made once per session; the caller's module must have Ray running)."""
    from linnaeus.config import IngestConfig
    from linnaeus.data.ingest import run_ingest

    made: dict[int, Path] = {}

    def ingest(shard_rows: int) -> Path:
        if shard_rows not in made:
            out = tmp_path_factory.mktemp(f"corpus-{shard_rows}")
            run_ingest(IngestConfig(input=str(synthetic_folder), format="folder", output=str(out),
                                    shard_rows=shard_rows))
            made[shard_rows] = out
        return made[shard_rows]

    return ingest


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module (2 CPUs, no dashboard), as the house rules ask."""
    import gc

    import ray

    # address="local": a fresh Ray even when /tmp/ray/ray_current_cluster names a cluster from a run that
    # was killed (a Cluster writes that file and only its shutdown removes it); ray.init() would join it
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    gc.collect()  # finalise dataset iterators so their executor threads stop before Ray does
    ray.shutdown()


@pytest.fixture(scope="session")
def load_job():
    """Load a `jobs/<name>.py` entrypoint as a module so a test calls its `main(argv)` in-process."""
    import importlib.util

    jobs = Path(__file__).resolve().parents[1] / "jobs"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"job_{name}", jobs / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
