"""The exact training speed-ups: fused attention and cut text change speed, never the model's answers."""

import numpy as np
import open_clip
import pytest
import torch

from linnaeus.clip import fastclip
from linnaeus.clip.models import create_model, model_config, tokenizer


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


@pytest.mark.parametrize("fused_attention", [True, False])
def test_cut_text_gives_open_clips_features_and_gradients_of_the_full_context(fused_attention):
    plain, cut_model = _pair()
    if fused_attention:
        fastclip.fuse_attention(cut_model)
    fastclip.accept_cut_text(cut_model)
    _, texts = _batch()
    cut = fastclip.cut_tokens(texts)
    assert cut.shape[1] == 32 < texts.shape[1]
    full, short = plain.encode_text(texts), cut_model.encode_text(cut)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
    (full ** 2).sum().backward()
    (short ** 2).sum().backward()
    for (name, p), q in zip(plain.transformer.named_parameters(), cut_model.transformer.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(cut_model.positional_embedding.grad, plain.positional_embedding.grad, atol=1e-5,
                               rtol=1e-4)


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


def test_a_text_tower_with_a_class_token_mask_keeps_its_mask():
    class Towers(torch.nn.Module):  # CoCa-style: the class token's mask is added to the causal one
        def __init__(self):
            super().__init__()
            self.text = open_clip.transformer.TextTransformer(context_length=12, vocab_size=100, width=32,
                                                               heads=2, layers=1, embed_cls=True)

    torch.manual_seed(0)
    model = Towers()
    tokens = torch.tensor([[5, 9, 3, 0, 0, 0, 0, 0, 0, 0, 0], [5, 7, 8, 6, 4, 3, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        before = model.text(tokens)
        assert fastclip.fuse_attention(model) == 1
        assert not model.text.transformer.resblocks[0].attn.causal
        torch.testing.assert_close(model.text(tokens), before, atol=1e-5, rtol=1e-5)


def test_self_attention_takes_multihead_attentions_masks():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    fused = fastclip.SelfAttention(mha)
    x = torch.randn(3, 5, 16)
    for mask in (torch.randn(5, 5), torch.randn(6, 5, 5), torch.rand(5, 5) > 0.7):
        if mask.dtype == torch.bool:
            mask[:, 0] = False  # every query keeps a key
        expected = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(fused(x, x, x, attn_mask=mask)[0], expected, atol=1e-5, rtol=1e-5)


def test_self_attention_refuses_cross_attention():
    _, fused = _pair()
    fastclip.fuse_attention(fused)
    attn = fused.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, 128)
    with pytest.raises(ValueError, match="self-attention only"):
        attn(x, x.clone(), x)
