"""Weighted captions (`dataset.weighted_captions`): A1111 emphasis such as `(word:1.3)`, `(word)`,
`[word]` scales the embeddings of exactly the tokens of `word`.

    tokens = [tokenize_weighted(tok, captions, 150) for tok in components.tokenizers]
    cond = encode_weighted(family, components.text_encoders, tokens, clip_skip)

The token ids are the ones `text_encoding.tokenize` gives for the caption with the emphasis syntax
removed (same 75-token chunks, same padding), and the conditioning has `text_encoding.encode`'s
shape, (b, 75n + 2, d). The weighting follows sd-scripts' `get_weighted_text_embeddings` (and
A1111's prompt emphasis): multiply each position's hidden state by its token's weight, then rescale
the whole caption so that its mean over positions and features is what it was before. sd-scripts'
newer strategy code (`encode_tokens_with_weights`) drops that rescaling; `keep_mean=False` gives
that variant. SDXL: each encoder's half of the hidden state is weighted and rescaled on its own; the
pooled embedding is not weighted (as in sd-scripts).

A caption without emphasis (every weight 1) gives exactly, bit for bit, the unweighted encoding. A
caption whose mean is numerically zero is not rescaled (the ratio would be noise over noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config.schema import ModelFamily
from engine.data.captions import CHUNK, chunk_token_ids, parse_weighted_caption
from engine.text.encoding import Conditioning, encode

#: below this share of the mean absolute value, a caption's mean counts as zero (no rescaling)
MEAN_EPS = 1e-4


@dataclass(frozen=True)
class WeightedTokens:
    """One tokenizer's view of a batch of captions."""

    ids: torch.Tensor  # (b, n, 77) long: as text_encoding.tokenize
    weights: torch.Tensor  # (b, 75n + 2) float32: the weight of each position of the merged hidden state

    def to(self, device) -> WeightedTokens:
        return WeightedTokens(self.ids.to(device), self.weights.to(device))


def caption_tokens(tokenizer, caption: str, max_token_length: int) -> tuple[list[int], list[float]]:
    """Content token ids (no start/end token) of a caption's text and the weight of each, at most
    `max_token_length` of them (longer captions are cut, as the unweighted tokenizer cuts them)."""
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in parse_weighted_caption(caption):
        piece = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_token_length).input_ids
        ids += piece
        weights += [weight] * len(piece)
        if len(ids) >= max_token_length:
            break
    return ids[:max_token_length], weights[:max_token_length]


def tokenize_weighted(tokenizer, captions: list[str], max_token_length: int) -> WeightedTokens:
    """Token ids in 75-token chunks, as `text_encoding.tokenize`, plus per-position weights."""
    n = max_token_length // CHUNK
    rows, weight_rows = [], []
    for caption in captions:
        content, weights = caption_tokens(tokenizer, caption, max_token_length)
        full = [tokenizer.bos_token_id, *content, tokenizer.eos_token_id]
        rows.append(
            chunk_token_ids(
                full, max_token_length, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id
            )
        )
        # merged position p (1..75n) holds content token p-1; start, end and padding keep weight 1
        weight_rows.append([1.0, *weights, *([1.0] * (CHUNK * n + 1 - len(weights)))])
    return WeightedTokens(torch.tensor(rows, dtype=torch.long), torch.tensor(weight_rows, dtype=torch.float32))


def apply_weights(hidden: torch.Tensor, weights: torch.Tensor, *, keep_mean: bool = True) -> torch.Tensor:
    """hidden (b, positions, d) times each position's weight (b, positions); with `keep_mean`, then
    rescaled per caption to its original mean. Rows whose weights are all 1 are returned untouched."""
    if weights.shape != hidden.shape[:2]:
        raise ValueError(f"weights of shape {tuple(weights.shape)} for hidden states of shape {tuple(hidden.shape)}")
    w = weights.to(hidden.device, torch.float32)
    h = hidden.float()
    weighted = h * w.unsqueeze(-1)
    if keep_mean:
        before = h.mean(dim=(-2, -1), keepdim=True)
        after = weighted.mean(dim=(-2, -1), keepdim=True)
        # A mean that is numerically zero (layer-norm outputs with a zero bias, as in untrained
        # models) carries no scale: dividing by it would blow the caption up or wipe it out.
        tiny = MEAN_EPS * h.abs().mean(dim=(-2, -1), keepdim=True)
        usable = (before.abs() > tiny) & (after.abs() > tiny)
        weighted = weighted * torch.where(usable, before / torch.where(usable, after, 1.0), 1.0)
    plain = (w == 1).all(dim=-1)[:, None, None]
    return torch.where(plain, hidden, weighted.to(hidden.dtype))


def encode_weighted(
    family: ModelFamily,
    encoders: list,
    tokens: list[WeightedTokens],
    clip_skip: int,
    *,
    keep_mean: bool = True,
) -> Conditioning:
    """`text_encoding.encode` of the tokens' ids, with the emphasis weights applied."""
    cond = encode(family, encoders, [t.ids for t in tokens], clip_skip)
    if family == ModelFamily.SDXL:
        width = encoders[0].config.hidden_size
        first = apply_weights(cond.hidden[..., :width], tokens[0].weights, keep_mean=keep_mean)
        second = apply_weights(cond.hidden[..., width:], tokens[1].weights, keep_mean=keep_mean)
        return Conditioning(torch.cat([first, second], dim=-1), cond.pooled)
    return Conditioning(apply_weights(cond.hidden, tokens[0].weights, keep_mean=keep_mean), cond.pooled)
