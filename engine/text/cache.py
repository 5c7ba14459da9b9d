"""Text-encoder outputs computed once before training, when no step could get a different one.

When only the U-Net trains (network.train_on=unet_only) the text encoders are frozen, and unless a
caption rule rewrites captions at each use (shuffled tags, tag dropout, weighted captions), every
step would encode the same text to the same conditioning. So each distinct caption is encoded once
(sd-scripts' --cache_text_encoder_outputs), the steps read the result from memory, and the encoders
never run during training: they can leave the GPU. Whole-caption dropout only swaps a caption for
"", so it is served by caching "" as well (sd-scripts' `cache_supports_dropout`).

Captions are encoded in batches of the training batch size, under the same autocast as a step: on
a CPU a 1-row matmul takes another kernel than a many-row one, and the cached values must be the
ones a step would have computed, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from engine.config.schema import ModelConfig, TrainConfig, TrainOn
from engine.data.captions import apply_rules
from engine.data.subsets import all_caption_rules
from engine.events import Phase
from engine.text.encoding import Conditioning, encode, tokenize


@dataclass
class TextCache:
    """caption text -> (hidden (75n+2, d), pooled (p,) or None), kept on the CPU."""

    entries: dict[str, tuple[torch.Tensor, torch.Tensor | None]]

    def conditioning(self, captions: list[str], device: torch.device | str) -> Conditioning:
        missing = [c for c in captions if c not in self.entries]
        if missing:
            # the cache holds every text the plan can produce; a miss means the two disagree (a bug)
            raise KeyError(f"caption not in the text-encoder cache: {missing[0]!r}")
        hidden = torch.stack([self.entries[c][0] for c in captions]).to(device)
        pooled = [self.entries[c][1] for c in captions]
        return Conditioning(hidden, None if pooled[0] is None else torch.stack(pooled).to(device))

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for pair in self.entries.values() for t in pair if t is not None)


def cache_blocker(cfg: TrainConfig) -> str | None:
    """Why this config's text-encoder outputs cannot be cached, or None when they can."""
    ds = cfg.dataset
    if cfg.network.train_on != TrainOn.UNET_ONLY:
        return f"the text encoder trains (network.train_on={cfg.network.train_on.value})"
    rules = all_caption_rules(cfg)
    if any(r.shuffle for r in rules):
        return "dataset.shuffle_caption reorders the tags at every use"
    if any(r.tag_dropout_rate > 0 for r in rules):
        return "dataset.caption_tag_dropout_rate drops tags at every use"
    if any(r.wildcard for r in rules):
        return "dataset.enable_wildcard picks a caption variant at every use"
    if any(r.token_warmup_step > 0 for r in rules):
        return "dataset.token_warmup_step lengthens the captions step by step"
    if ds.weighted_captions:
        return "dataset.weighted_captions encodes captions with per-token weights"
    return None


def captions_to_cache(cfg: TrainConfig, plan, captions: dict) -> list[str]:
    """Every text a step can ask for (sorted): each image's caption as processed, and "" when a
    caption dropout is on. Only meaningful when `cache_blocker(cfg)` is None (no per-use rules)."""
    texts = set()
    dropout = False
    for item in plan.items:
        rules = item.record.rules
        # no per-use rule is on: only the dropout draws from the rng, and a kept caption is the same
        # text at any epoch, so it is processed with dropout off and "" is added for the drops
        fixed = replace(rules, dropout_rate=0.0, dropout_every_n_epochs=0)
        texts.add(apply_rules(captions[item.record.path], fixed, epoch=1, rng=random.Random(0)))
        dropout = dropout or rules.dropout_rate > 0 or rules.dropout_every_n_epochs > 0
    if dropout:
        texts.add("")
    return sorted(texts)


def encode_captions(components, captions: list[str], model_cfg: ModelConfig, device, *, weighted: bool = False) -> Conditioning:
    """Tokenize and encode captions with the model's text encoders (the caller sets grad/autocast)."""
    if weighted:
        from engine.text.weighted import encode_weighted, tokenize_weighted

        tokens = [tokenize_weighted(tok, captions, model_cfg.max_token_length).to(device) for tok in components.tokenizers]
        return encode_weighted(components.family, components.text_encoders, tokens, model_cfg.clip_skip)
    ids = [tokenize(tok, captions, model_cfg.max_token_length).to(device) for tok in components.tokenizers]
    return encode(components.family, components.text_encoders, ids, model_cfg.clip_skip)


def build_text_cache(cfg: TrainConfig, plan, captions: dict, components, accelerator, reporter) -> TextCache | None:
    """Encode every caption the run can use once, or return None (with a notice when only the
    U-Net trains) when captions change between uses. Call it with the text encoders already on
    the device in their training dtype; afterwards they are not needed for the steps."""
    reason = cache_blocker(cfg)
    if reason is not None:
        if cfg.network.train_on == TrainOn.UNET_ONLY:
            reporter.notice(f"text-encoder outputs are computed at every step, not cached: {reason}")
        return None
    reporter.phase(Phase.CACHING_TEXT)
    texts = captions_to_cache(cfg, plan, captions)
    size = cfg.training.batch_size
    entries: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    reporter.progress(Phase.CACHING_TEXT, 0, len(texts))
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            cond = encode_captions(components, chunk, cfg.model, accelerator.device)
            hidden = cond.hidden.cpu()  # one copy per batch, not per row
            pooled = None if cond.pooled is None else cond.pooled.cpu()
            for i, text in enumerate(chunk):
                entries[text] = (hidden[i], None if pooled is None else pooled[i])
            reporter.progress(Phase.CACHING_TEXT, start + len(chunk), len(texts))
    cache = TextCache(entries)
    reporter.notice(
        f"text encoders frozen and captions fixed: encoded {len(entries)} distinct captions once "
        f"({cache.nbytes / 2**20:.1f} MiB in memory); the steps do not run the text encoders"
    )
    return cache
