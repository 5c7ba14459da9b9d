"""Captions to the UNet's conditioning: tokenize in 75-token chunks, encode, merge (sd-scripts' way).

SD1: hidden state `clip_skip` from the end, then the final layer norm (clip_skip 1 = the usual output).
SD2: the OpenCLIP encoder as diffusers ships it already stops one layer early (the penultimate layer
     SD2 was trained with), so its last hidden state is used and clip_skip does not apply.
SDXL: CLIP-L and OpenCLIP-bigG penultimate hidden states side by side, plus the bigG pooled
      embedding (projection of the end token's state) of the first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config.schema import ModelFamily
from engine.data.captions import chunk_token_ids, merge_chunk_states


@dataclass
class Conditioning:
    hidden: torch.Tensor  # (b, 75n+2, d)
    pooled: torch.Tensor | None  # SDXL only: (b, projection_dim)


def tokenize(tokenizer, captions: list[str], max_token_length: int) -> torch.Tensor:
    """(b, n, 77) token ids: padded to max_token_length + 2, cut into chunks of 75 + bos/eos."""
    ids = tokenizer(
        captions, padding="max_length", max_length=max_token_length + 2, truncation=True
    ).input_ids
    chunked = [
        chunk_token_ids(
            row,
            max_token_length,
            bos=tokenizer.bos_token_id,
            eos=tokenizer.eos_token_id,
            pad=tokenizer.pad_token_id,
        )
        for row in ids
    ]
    return torch.tensor(chunked, dtype=torch.long)


def _hidden_at(encoder, ids: torch.Tensor, from_end: int, final_norm: bool) -> torch.Tensor:
    out = encoder(ids, output_hidden_states=True, return_dict=True)
    if from_end == 1 and final_norm:
        return out.last_hidden_state
    hidden = out.hidden_states[-from_end]
    if final_norm:
        hidden = final_layer_norm(encoder)(hidden)
    return hidden


def final_layer_norm(encoder) -> torch.nn.Module:
    """The encoder's final LayerNorm, in either transformers layout (v5 dropped `.text_model`)."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def clip_skip_used(family: ModelFamily, clip_skip: int) -> int:
    """The hidden state, counted from the end of the encoder as loaded, that the conditioning is
    read at: SD2's encoder already stops at the penultimate layer of OpenCLIP-H (diffusers ships it
    without its last layer), so its last state (1) is used; SDXL always reads the penultimate (2);
    SD1 reads model.clip_skip. This is what a LoRA's metadata records as its clip skip."""
    if family == ModelFamily.SD2:
        return 1
    return 2 if family == ModelFamily.SDXL else clip_skip


def encode(
    family: ModelFamily,
    encoders: list,
    token_ids: list[torch.Tensor],
    clip_skip: int,
) -> Conditioning:
    """Encode pre-tokenized chunks (one (b, n, 77) tensor per encoder) into the UNet conditioning."""
    b, n, width = token_ids[0].shape
    if family == ModelFamily.SDXL:
        te1, te2 = encoders
        ids1 = token_ids[0].reshape(b * n, width).to(te1.device)
        ids2 = token_ids[1].reshape(b * n, width).to(te2.device)
        h1 = _hidden_at(te1, ids1, 2, final_norm=False)
        out2 = te2(ids2, output_hidden_states=True, return_dict=True)
        h2 = out2.hidden_states[-2]
        pooled = _pooled_at_end_token(te2, out2.last_hidden_state, ids2)
        hidden = torch.cat([merge_chunk_states(h1, n), merge_chunk_states(h2, n)], dim=-1)
        return Conditioning(hidden, pooled.reshape(b, n, -1)[:, 0])
    (encoder,) = encoders
    ids = token_ids[0].reshape(b * n, width).to(encoder.device)
    hidden = _hidden_at(encoder, ids, clip_skip_used(family, clip_skip), final_norm=True)
    return Conditioning(merge_chunk_states(hidden, n), None)


def _pooled_at_end_token(encoder, last_hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Project the state of the first end token (CLIP's own pooling picks the highest id instead,
    which differs once a caption holds added tokens; sd-scripts uses the end token too)."""
    eos_id = encoder.config.eos_token_id
    index = (ids == eos_id).int().argmax(dim=1)
    states = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), index]
    return encoder.text_projection(states)
