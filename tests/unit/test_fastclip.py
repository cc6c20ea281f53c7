"""The exact training speed-ups: fused attention and cut text change speed, never the model's answers."""

import numpy as np
import open_clip
import pytest
import torch

from linnaeus import fastclip
from linnaeus.models import create_model, model_config, tokenizer


def _pair(seed: int = 0):
    plain = create_model("linnaeus-tiny", seed=seed)
    fused = create_model("linnaeus-tiny", seed=seed)
    return plain, fused


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, 64, 64, generator=g)
    texts = tokenizer("linnaeus-tiny")(["a photo of Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia.",
                                        "a photo of magpie.", "a photo of Pica hudsonia.", "bird"])
    return images, texts


def test_fused_attention_gives_open_clips_features_and_gradients():
    plain, fused = _pair()
    assert fastclip.fuse_attention(fused) == 4  # two vision blocks, two text blocks
    images, texts = _batch()
    outputs = []
    for model in (plain, fused):
        image_features, text_features, scale = model(images, texts)
        (image_features @ text_features.T * scale).logsumexp(1).sum().backward()
        outputs.append((image_features, text_features, {n: p.grad for n, p in model.named_parameters()}))
    (pi, pt, pg), (fi, ft, fg) = outputs
    torch.testing.assert_close(fi, pi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ft, pt, atol=1e-5, rtol=1e-5)
    assert fg.keys() == pg.keys()
    for name in pg:
        torch.testing.assert_close(fg[name], pg[name], atol=1e-5, rtol=1e-4, msg=name)


def test_fused_model_keeps_state_dict_and_parameter_order():
    plain, fused = _pair()
    fastclip.fuse_attention(fused)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert list(fused.state_dict()) == list(plain.state_dict())
    reloaded = open_clip.create_model("linnaeus-tiny")  # plain open_clip reads a fused model's weights
    reloaded.load_state_dict(fused.state_dict())


def test_only_the_text_towers_blocks_run_causal():
    _, fused = _pair()
    fastclip.fuse_attention(fused)
    assert all(b.attn.causal for b in fused.transformer.resblocks)
    assert not any(b.attn.causal for b in fused.visual.transformer.resblocks)


def test_cut_text_gives_the_features_of_the_full_context():
    _, fused = _pair()
    fastclip.fuse_attention(fused)
    fastclip.accept_cut_text(fused)
    _, texts = _batch()
    cut = fastclip.cut_tokens(texts)
    assert cut.shape[1] == 32 < texts.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(fused.encode_text(cut), fused.encode_text(texts), atol=1e-5, rtol=1e-5)


def test_cut_tokens_rounds_up_and_never_grows():
    tokens = np.zeros((3, 77), dtype=np.int64)
    tokens[0, :5] = 7
    tokens[1, :17] = 7
    assert fastclip.cut_tokens(tokens).shape == (3, 32)
    assert fastclip.cut_tokens(torch.from_numpy(tokens), multiple=8).shape == (3, 24)
    tokens[2, :] = 7
    assert fastclip.cut_tokens(tokens).shape == (3, 77)
    assert fastclip.cut_tokens(np.zeros((2, 77), dtype=np.int64)).shape == (2, 16)


def test_cut_text_refused_where_padding_could_change_features():
    assert fastclip.cut_text_problem(model_config("ViT-B-16")) is None
    assert "not causal" in fastclip.cut_text_problem({"text_cfg": {"no_causal_mask": True}})
    assert "pools by 'last'" in fastclip.cut_text_problem({"text_cfg": {"pool_type": "last"}})
    assert "Hugging Face" in fastclip.cut_text_problem({"text_cfg": {"hf_model_name": "x"}})
    model = create_model("linnaeus-tiny", seed=0)
    model.attn_mask = None
    with pytest.raises(ValueError, match="causal text tower"):
        fastclip.accept_cut_text(model)


def test_self_attention_refuses_cross_attention():
    _, fused = _pair()
    fastclip.fuse_attention(fused)
    attn = fused.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, 128)
    with pytest.raises(ValueError, match="self-attention only"):
        attn(x, x.clone(), x)
