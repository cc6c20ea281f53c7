"""The training benchmark's arithmetic: steady-state rates, open_clip's log lines and flags, the goals."""

from __future__ import annotations

from pathlib import Path

import pytest

from linnaeus.bench.openclip import openclip_argv, parse_log
from linnaeus.bench.training import steady, summarise
from linnaeus.config import TrainConfig

# Two lines as open_clip_train 3.3 prints them (the first window is one step, the next ones four).
LOG = (
    '2026-11-22,15:28:52 | INFO | Train Epoch: 0 [ 32/384 (8%)] Data (t): 0.246 Batch (t): 1.827, 17.'
    '5134/s, 17.5134/s/gpu LR: 0.000100 Logit Scale: 14.286 Contrastive_loss: 3.5954 (3.5954) Loss: 3'
    '.5954 (3.5954)\n'
    '2026-11-22,15:28:55 | INFO | Train Epoch: 0 [160/384 (42%)] Data (t): 0.010 Batch (t): 0.500, 71'
    '.3536/s, 71.3536/s/gpu LR: 0.000500 Logit Scale: 14.272 Contrastive_loss: 3.4209 (3.5081) Loss: '
    '3.4209 (3.5081)\n'
)


def test_steady_rate_is_total_images_over_total_time_after_warmup():
    windows = [{"step": 10, "images_per_s": 10.0, "data_wait": 0.9},   # warm-up, left out
               {"step": 20, "images_per_s": 100.0, "data_wait": 0.5},  # 10 steps x 8 images in 0.8 s
               {"step": 30, "images_per_s": 400.0, "data_wait": 0.0}]  # 80 images in 0.2 s
    rate = steady(windows, first_step=10, batch_per_step=8)
    assert rate["images_per_s"] == pytest.approx(160 / 1.0)  # not the mean of 100 and 400
    assert rate["data_wait"] == pytest.approx(0.4 / 1.0) and rate["windows"] == 2


def test_steady_with_nothing_after_warmup_says_so():
    assert steady([{"step": 5, "images_per_s": 1.0, "data_wait": 0.0}], 10, 8)["images_per_s"] is None


def test_open_clip_log_lines_give_rate_wait_and_loss():
    records = parse_log(LOG, batch_size=32)
    assert [r["seen"] for r in records] == [32, 160]
    assert records[1]["images_per_s"] == pytest.approx(32 / 0.5) and records[1]["data_wait"] == pytest.approx(0.02)
    assert records[1]["loss"] == pytest.approx(3.4209)


def test_open_clip_gets_the_recipes_settings():
    cfg = TrainConfig.model_validate({
        "data": {"data": "/c"}, "model": {"arch": "ViT-B-16", "compile": True},
        "optim": {"lr": 5e-4, "weight_decay": 0.2, "warmup_steps": 50, "grad_clip_norm": 1.0},
        "schedule": {"batch_size": 512, "precision": "bf16"}})
    argv = openclip_argv(cfg, [Path("/w/000000.tar"), Path("/w/000004.tar")], 100, Path("/l"), "n", 14, 20)
    flags = dict(zip(argv[::1], argv[1:]))
    assert flags["--train-data"] == "/w/{000000..000004}.tar" and flags["--train-num-samples"] == "51200"
    assert flags["--batch-size"] == "512" and flags["--precision"] == "amp_bf16" and flags["--lr"] == "0.0005"
    assert flags["--warmup"] == "50" and flags["--grad-clip-norm"] == "1.0" and "--torchcompile" in argv
    assert "--dataset-resampled" in argv and flags["--workers"] == "14"


def test_open_clip_has_no_fp8_to_compare_with():
    pytest.importorskip("torchao", reason="an fp8 recipe validates only with torchao (the fp8 extra, in dev)")
    tars, logs = [Path("/w/000000.tar")], Path("/l")
    fp32 = TrainConfig.model_validate({"data": {"data": "/c"}, "schedule": {"precision": "fp32"}})
    argv = openclip_argv(fp32, tars, 1, logs, "n", 1, 1)
    assert argv[argv.index("--precision") + 1] == "fp32"
    fp8 = TrainConfig.model_validate({"data": {"data": "/c"}, "schedule": {"precision": "fp8"},
                                      "scaling": {"use_gpu": True}})
    with pytest.raises(ValueError, match="open_clip_train has no fp8 recipe: compare with bf16"):
        openclip_argv(fp8, tars, 1, logs, "n", 1, 1)


def test_summary_ratios_and_data_path_verdict():
    s = summarise({"ceiling": {"images_per_s": 2000.0}, "data": {"images_per_s": 1500.0},
                   "e2e": {"images_per_s": 1400.0}, "openclip": {"images_per_s": 1000.0}})
    assert s["e2e_over_ceiling"] == pytest.approx(0.7) and s["linnaeus_over_openclip"] == pytest.approx(1.4)
    assert s["data_over_ceiling"] == pytest.approx(0.75) and "cannot feed" in s["data_path"]


def test_open_clip_counts_micro_batches_so_accumulation_keeps_the_step_count():
    cfg = TrainConfig.model_validate({"data": {"data": "/c"}, "schedule": {"batch_size": 64, "accumulation": 4}})
    argv = openclip_argv(cfg, [Path("/w/000000.tar")], 10, Path("/l"), "n", 1, 1)
    flags = dict(zip(argv, argv[1:]))
    assert flags["--train-num-samples"] == str(10 * 64 * 4) and flags["--accum-freq"] == "4"


def test_steady_counts_only_the_windows_it_uses():
    windows = [{"step": s, "images_per_s": 100.0, "data_wait": 0.0} for s in (10, 20, 30)]
    assert steady(windows, first_step=15, batch_per_step=1)["windows"] == 1  # 10-20 starts before step 15


def test_ceiling_without_a_readable_corpus_says_its_text_is_random(tmp_path):
    import torch

    from linnaeus.bench.ceiling import synthetic_text
    from linnaeus.config import load_yaml

    demo = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml"
    cfg = load_yaml(TrainConfig, demo, [f"data.data={tmp_path / 'nothing'}"])
    text, source = synthetic_text(cfg, 4, torch.Generator().manual_seed(0))
    assert source == "random" and tuple(text.shape) == (4, 77) and bool((text > 0).all())
