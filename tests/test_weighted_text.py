"""Weighted captions: token ids and weights, the emphasis formula, and bit-equality without emphasis."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from engine.config.schema import ModelFamily
from engine.models.tiny import build_tiny
from engine.text.encoding import encode, final_layer_norm, tokenize
from engine.text.weighted import (
    apply_weights,
    caption_tokens,
    encode_weighted,
    tokenize_weighted,
)

SD1, SD2, SDXL = ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL


@pytest.fixture(scope="module")
def tiny():
    return {family: build_tiny(family) for family in (SD1, SD2, SDXL)}


def test_ids_match_the_plain_tokenizer_and_weights_sit_on_the_emphasised_tokens(tiny):
    tok = tiny[SD1].tokenizers[0]
    plain = tokenize(tok, ["a cat sitting on a chair"], 150)
    weighted = tokenize_weighted(tok, ["a (cat:1.3) sitting [on] a ((chair))"], 150)
    assert torch.equal(weighted.ids, plain)
    assert weighted.weights.shape == (1, 152)
    w = weighted.weights[0].tolist()
    assert w[:7] == pytest.approx([1.0, 1.0, 1.3, 1.0, 1 / 1.1, 1.0, 1.1 * 1.1])
    assert w[7:] == [1.0] * (152 - 7)


def test_a_word_of_several_tokens_gives_each_token_the_weight(tiny):
    tok = tiny[SD1].tokenizers[0]
    ids, weights = caption_tokens(tok, "(hyperrealistic:0.5) photo", 75)
    word = tok("hyperrealistic", add_special_tokens=False).input_ids
    assert len(word) > 1 and ids[: len(word)] == word
    assert weights == [0.5] * len(word) + [1.0]


def test_long_captions_are_cut_like_the_plain_tokenizer(tiny):
    tok = tiny[SD2].tokenizers[0]  # pads with "!", not the end token
    caption = ", ".join(f"tag{i}" for i in range(120))
    assert torch.equal(tokenize_weighted(tok, [caption], 150).ids, tokenize(tok, [caption], 150))
    assert torch.equal(tokenize_weighted(tok, [caption], 75).ids, tokenize(tok, [caption], 75))
    emphasised = tokenize_weighted(tok, [f"({caption}:1.2)"], 150)
    assert torch.equal(emphasised.ids, tokenize(tok, [caption], 150))
    assert emphasised.weights[0, 1:151].eq(1.2).all() and emphasised.weights[0, [0, 151]].eq(1.0).all()


def test_apply_weights_formula():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4) + 0.5
    weights = torch.ones(2, 5)
    weights[0, 2] = 1.3
    out = apply_weights(hidden, weights)
    ratio = hidden[0].mean() / (hidden[0] * weights[0, :, None]).mean()  # back to the caption's mean
    assert torch.allclose(out[0, 2], hidden[0, 2] * 1.3 * ratio, rtol=1e-6)
    for p in (0, 1, 3, 4):
        assert torch.allclose(out[0, p], hidden[0, p] * ratio, rtol=1e-6)
    assert out[0].mean().item() == pytest.approx(hidden[0].mean().item(), rel=1e-5)
    assert torch.equal(out[1], hidden[1])  # no emphasis: untouched
    plain = apply_weights(hidden, weights, keep_mean=False)
    assert torch.equal(plain[0, 2], hidden[0, 2] * 1.3) and torch.equal(plain[0, 0], hidden[0, 0])
    with pytest.raises(ValueError):
        apply_weights(hidden, torch.ones(2, 4))


@pytest.mark.parametrize("family, max_len", [(SD1, 75), (SD1, 150), (SD2, 225), (SDXL, 150)])
def test_without_emphasis_the_encoding_is_exactly_the_unweighted_one(tiny, family, max_len):
    c = tiny[family]
    captions = ["a cat, sitting on a chair", "", "dog"]
    with torch.no_grad():
        plain = encode(family, c.text_encoders, [tokenize(t, captions, max_len) for t in c.tokenizers], 2)
        weighted = encode_weighted(family, c.text_encoders, [tokenize_weighted(t, captions, max_len) for t in c.tokenizers], 2)
    assert torch.equal(weighted.hidden, plain.hidden)
    assert (weighted.pooled is None) == (plain.pooled is None)
    if plain.pooled is not None:
        assert torch.equal(weighted.pooled, plain.pooled)


def test_a_zero_mean_caption_is_not_rescaled():
    hidden = torch.tensor([[[1.0, -1.0], [2.0, -2.0], [0.5, -0.5]]])  # mean exactly 0
    weights = torch.tensor([[1.0, 1.3, 1.0]])
    assert torch.equal(apply_weights(hidden, weights), apply_weights(hidden, weights, keep_mean=False))


@pytest.mark.parametrize("family", [SD1, SDXL])
def test_emphasis_scales_exactly_the_weighted_token(tiny, family):
    c = tiny[family]
    bias = final_layer_norm(c.text_encoders[0]).bias
    saved = bias.detach().clone()
    try:
        # an untrained final layer norm (bias 0) gives every token a zero mean; a trained one does not
        with torch.no_grad():
            bias.fill_(0.2)
        check_emphasis(c, family)
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def check_emphasis(c, family):
    with torch.no_grad():
        plain = encode(family, c.text_encoders, [tokenize(t, ["a cat sitting", "dog"], 150) for t in c.tokenizers], 2)
        tokens = [tokenize_weighted(t, ["a (cat:1.5) sitting", "dog"], 150) for t in c.tokenizers]
        weighted = encode_weighted(family, c.text_encoders, tokens, 2)
    assert torch.equal(weighted.hidden[1], plain.hidden[1])  # the other caption of the batch is untouched
    halves = [(0, plain.hidden.shape[-1])]
    if family == SDXL:
        width = c.text_encoders[0].config.hidden_size
        halves = [(0, width), (width, plain.hidden.shape[-1])]
    for start, stop in halves:
        before, after = plain.hidden[0, :, start:stop], weighted.hidden[0, :, start:stop]
        ratio = before.mean() / (before.mean() + before[2].sum() * 0.5 / before.numel())
        assert abs(ratio.item() - 1) > 1e-4  # the rescaling really happens here
        assert torch.allclose(after[2], before[2] * 1.5 * ratio, rtol=1e-5, atol=1e-6)  # "cat"
        others = [p for p in range(after.shape[0]) if p != 2]
        assert torch.allclose(after[others], before[others] * ratio, rtol=1e-5, atol=1e-6)
    if family == SDXL:
        assert torch.equal(weighted.pooled, plain.pooled)
