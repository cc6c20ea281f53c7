"""A second entry in each registry, defined only in the tests (tests/plugins/dummy_parts.py), runs through
the real code paths: a recipe names them, the stream draws their captions, tokenises with their tower
and crops their view, Ray Train trains with their objective (its state surviving a killed worker), the
export names them, and a label bank, the Predictor and Ray Serve answer with the trained model."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from linnaeus.config import ConfigError, TrainConfig, load_yaml
from linnaeus.data.loader import decode_tokens, iter_train_batches
from linnaeus.data.stream import build_stream
from linnaeus.data.synthetic import draw, make_tree
from linnaeus.images import decode_image
from linnaeus.train.plan import plan_training

pytestmark = pytest.mark.usefixtures("ray_local")
DEMO = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml"
PLUGIN = "tests.plugins.dummy_parts"
PARTS = [f"plugins=[{PLUGIN}]", "objective={name: test-ema, weight: 0.5, momentum: 0.9}",
         "model.text_tower={name: test-bag, context_length: 24}", "data.text_source=test-kingdom"]
STEPS = 20


def recipe(corpus: Path, tmp: Path, *more: str) -> TrainConfig:
    return load_yaml(TrainConfig, DEMO, [*PARTS, f"data.data={corpus}", f"checkpoint.storage_path={tmp}",
                                         "data.preprocess_batch=16", "data.shuffle_buffer=64", *more])


@pytest.fixture(scope="module")
def corpus(ingest_synthetic) -> Path:
    return ingest_synthetic(40)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> dict:
    """One run with every dummy part: 20 steps, checkpoints at 10 and 20, a worker killed at step 15 (Ray
    Train hands a restarted group the latest checkpoint it has registered, some steps after the report)."""
    from linnaeus.train.trainer import run_training

    cfg = recipe(corpus, tmp_path_factory.mktemp("runs"), f"schedule.steps={STEPS}", "schedule.batch_size=16",
                 "schedule.log_every=5", "checkpoint.every_steps=10", "checkpoint.max_failures=1",
                 "faults={kill_at_step: 15}")
    return run_training(plan_training(cfg, recipe="plugins"))


def test_the_recipe_names_the_parts_and_the_stream_follows_them(corpus, tmp_path):
    cfg = recipe(corpus, tmp_path)
    assert (cfg.objective.name, cfg.model.text_tower.name, cfg.data.text_source) == ("test-ema", "test-bag",
                                                                                     "test-kingdom")
    assert cfg.data.context_length == 24 and cfg.data.cut_text  # the tower's, not open_clip's 77
    assert [v.name for v in cfg.data.views] == ["second"] and cfg.data.text_types == ["kingdom", "genus_common"]
    with pytest.raises(ConfigError, match=r"unknown objective 'test-nothing'; known: clip, test-ema"):
        recipe(corpus, tmp_path, "objective=test-nothing")
    with pytest.raises(ConfigError, match=r"objective: .*momentum"):
        recipe(corpus, tmp_path, "objective.momentum=fast")


def test_a_plugin_text_source_alone_reaches_the_streams_readers(corpus, tmp_path):
    """First Ray work of the module: no worker has imported the plugin yet (a recipe naming only a text
    source gives the workers nothing else that would import it)."""
    cfg = load_yaml(TrainConfig, DEMO, [f"plugins=[{PLUGIN}]", "data.text_source=test-kingdom", f"data.data={corpus}",
                                        f"checkpoint.storage_path={tmp_path}", "data.preprocess_batch=16"]).data
    batches = iter_train_batches(build_stream(cfg).dataset.iterator(), cfg, batch_size=8)
    batch = next(iter(batches))
    batches.close()
    captions = [decode_tokens(cfg, t) for t in batch["text"]]
    assert all(c.startswith("a living thing of the kingdom ") or " of the genus " in c for c in captions), captions


@pytest.mark.parametrize("decode", ["cpu", "hybrid"])
def test_the_stream_draws_the_sources_captions_and_crops_the_objectives_view(corpus, tmp_path, decode):
    cfg = recipe(corpus, tmp_path, f"data.decode={decode}").data
    stream = build_stream(cfg)
    batches = iter_train_batches(stream.dataset.iterator(), cfg, batch_size=8)
    batch = next(iter(batches))
    batches.close()
    assert batch["view_second"].shape == batch["image"].shape == (8, 3, 64, 64)
    assert not torch.equal(batch["view_second"], batch["image"])  # a crop of its own
    assert batch["text"].shape[1] <= 24
    captions = [decode_tokens(cfg, t) for t in batch["text"]]
    assert all(c.startswith("a living thing of the kingdom ") or " of the genus " in c for c in captions), captions


def test_a_killed_worker_is_replaced_and_the_run_ends_on_its_steps_with_the_objectives_state(trained):
    """The chaos test of training (any recipe runs this loop; this one has objective state to lose)."""
    run, export = Path(trained["run"]), Path(trained["export"])
    assert (run / "_fault_injected_at_step_15").is_file()  # the kill happened
    assert trained["steps"] == trained["total_steps"] == STEPS
    assert sorted(p.name for p in run.glob("checkpoint_0*")) == ["checkpoint_000000010", "checkpoint_000000020"]
    state = torch.load(Path(trained["checkpoint"]) / "objective.pt")
    # stepped by the first workers, then restored from step 10 by their replacements after the kill
    assert (int(state["lives"]), int(state["updates"])) == (2, STEPS)
    student = torch.load(export / "open_clip_pytorch_model.bin")
    teacher = {k.removeprefix("teacher."): v for k, v in state.items() if k.startswith("teacher.")}
    assert teacher and not torch.equal(teacher["conv1.weight"], student["visual.conv1.weight"])
    metrics = json.loads((export / "metrics.json").read_text())
    assert [m["step"] for m in metrics] == [5, 10, 15, 20]  # steps 11-15 were redone, not logged twice
    assert [m["teacher_updates"] for m in metrics] == [5, 10, 15, 20]
    config = json.loads((export / "open_clip_config.json").read_text())
    assert config["linnaeus_text_tower"] == {"name": "test-bag", "context_length": 24, "width": 32}
    assert config["linnaeus_plugins"] == [PLUGIN]


def test_the_trained_model_answers_through_a_label_bank_the_predictor_and_ray_serve(trained, corpus,
                                                                                    load_job):
    from ray import serve

    from linnaeus.serving.predictor import Predictor
    from serve.app import build_app

    export = trained["export"]
    # the label bank's actors build the model from the export in worker processes: the export's plugins
    assert load_job("build_label_bank").main(["--model", export, "--taxa", str(corpus)]) == 0
    predictor = Predictor(export, device="cpu")
    assert predictor.tokenizer(["a magpie"]).shape == (1, 24)
    tree = make_tree(8, seed=3)
    buf = io.BytesIO()
    draw(tree[0], np.random.default_rng(0), size=64).save(buf, format="JPEG")
    # the JPEG the service receives, decoded here the service's way: both paths see the same pixels (a
    # drawn image and its JPEG once flipped the runner-up of this barely trained model)
    image = decode_image(buf.getvalue())
    genus = predictor.predict([image], rank="genus", k=2)[0]
    assert len(genus) == 2 and genus[0]["probability"] >= genus[1]["probability"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"model": export, "api_key_env": None, "model_cpus": 0.25, "ingress_cpus": 0.25}),
                  name="plugins", route_prefix="/")
        body = {"images": [base64.b64encode(buf.getvalue()).decode()], "rank": "genus", "k": 2}
        answer = requests.post(f"http://127.0.0.1:{port}/v1/taxonomy", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [a["name"] for a in answer.json()["results"][0]] == [a["name"] for a in genus]
        texts = requests.post(f"http://127.0.0.1:{port}/v1/embed", json={"texts": ["a bird"]}, timeout=60)
        assert texts.status_code == 200 and texts.json()["dim"] == len(predictor.embed_texts(["x"])[0])
    finally:
        serve.shutdown()
