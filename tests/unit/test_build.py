"""What a recipe's model section turns on when the trainer and the ceiling build the model."""

from pathlib import Path

import torch

from linnaeus.clip.fastclip import SelfAttention
from linnaeus.config import TrainConfig, load_yaml
from linnaeus.train.build import build_model, compile_model

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml"
CPU = torch.device("cpu")


def test_default_build_fuses_attention_and_takes_cut_text():
    model = build_model(load_yaml(TrainConfig, DEMO), CPU)
    assert all(isinstance(b.attn, SelfAttention) for b in model.visual.transformer.resblocks)
    assert model.encode_text(torch.randint(1, 1000, (2, 32))).shape == (2, 64)


def test_both_speed_ups_can_be_turned_off():
    cfg = load_yaml(TrainConfig, DEMO, ["model.fused_attention=false", "data.cut_text=false"])
    model = build_model(cfg, CPU)
    assert all(type(b.attn) is torch.nn.MultiheadAttention for b in model.transformer.resblocks)
    assert "encode_text" not in vars(model)


def test_compiled_ddp_keeps_one_graph_unless_split_is_asked():
    with torch._dynamo.config.patch(optimize_ddp=True):
        for setting, expected in (("whole", False), ("split", True)):
            cfg = load_yaml(TrainConfig, DEMO, ["model.compile=true", f"model.compile_ddp={setting}"])
            compile_model(cfg, build_model(cfg, CPU))
            assert torch._dynamo.config.optimize_ddp is expected
