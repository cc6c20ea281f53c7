"""The training benchmark end to end on CPU (tiny model, local Ray): every mode runs and its figures hang
together, and the WebDataset export that open_clip's trainer reads holds the corpus's images and captions."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from linnaeus.bench.webdataset import export_webdataset

pytestmark = pytest.mark.usefixtures("ray_local")
DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def corpus(ingest_synthetic) -> Path:
    return ingest_synthetic(40)


def test_webdataset_export_pairs_every_image_with_a_caption_of_its_taxon(corpus, tmp_path):
    tars = export_webdataset(str(corpus), tmp_path)
    manifest = json.loads((corpus / "_manifest.json").read_text())
    assert len(tars) == len(manifest["shards"])
    names, captions = [], []
    for path in tars:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                names.append(member.name)
                data = tar.extractfile(member).read()
                if member.name.endswith(".jpg"):
                    assert Image.open(io.BytesIO(data)).format == "JPEG"
                else:
                    captions.append(data.decode())
    keys = {n.split(".")[0] for n in names}
    assert len(names) == 2 * len(keys) == 2 * manifest["rows"]
    assert all(c.strip() for c in captions) and len(set(captions)) > 8  # several text types and taxa


def test_every_mode_runs_and_reports_consistent_figures(corpus, tmp_path, load_job):
    out = tmp_path / "bench"
    argv = ["--config", DEMO, "--output", str(out), "--modes", "ceiling,data,e2e,openclip",
            "--steps", "8", "--warmup-steps", "4", "--ceiling-steps", "2", "--ceiling-warmup", "1",
            "--data-batches", "3", "--openclip-workers", "1", "--peak-tflops", "2.0",
            *[a for s in (f"data.data={corpus}", "scaling.workers=1", "data.decode=gpu", "schedule.batch_size=16",
                          "schedule.log_every=2", "data.shuffle_buffer=64", "data.preprocess_batch=16")
              for a in ("--set", s)]]
    assert load_job("benchmark_train").main(argv) == 0
    r = json.loads((out / "benchmark.json").read_text())
    for mode in ("ceiling", "data", "e2e", "openclip"):
        assert r[mode]["images_per_s"] > 0, mode
    for mode in ("ceiling", "e2e", "openclip"):
        m = r[mode]
        assert m["mfu"] == pytest.approx(m["images_per_s"] * m["gflop_per_image"] * 1e9 / 2.0e12)
    assert r["e2e"]["steady_windows"] == 2 and len(r["e2e"]["loss_curve"]) == 4
    # The ceiling's text is the corpus's captions, cut like the run's: both count the same text tokens.
    assert r["ceiling"]["text_source"] == "corpus" and r["ceiling"]["text_tokens"] in (16, 32, 48)
    # The run's figure is a mean over batches, which may fall in different multiples of 16.
    assert 16 <= r["e2e"]["text_tokens"] < 77 and "text_tokens" not in r["openclip"]
    assert r["ceiling"]["gflop_per_image"] < r["openclip"]["gflop_per_image"]
    assert [s for s, _ in r["openclip"]["loss_curve"]][-1] == 8
    assert r["summary"]["e2e_over_ceiling"] == pytest.approx(r["e2e"]["images_per_s"] / r["ceiling"]["images_per_s"])
    assert set(r["goals"]) == {"e2e_over_ceiling", "e2e_images_per_s", "linnaeus_over_openclip"}
