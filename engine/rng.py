"""Every random draw of a run, each from its own stream named by what it is for.

A stream is seeded from (the training seed, its purpose, where in the run it is used), never from
a generator shared across the run. So the same config and seed draw the same numbers, a resumed
run draws what the uninterrupted one would have drawn at that point, and N processes with batch b
draw what one process with batch N*b draws (each draw is made for the whole global batch).

The seeds' text forms are part of the reproducibility promise: changing one changes every LoRA a
saved config trains. Python's `random.Random(str)` hashes the text with SHA-512, the torch
generators below with SHA-256; neither depends on PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts, stable across runs, machines and Python versions."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def derive_generator(*parts: object) -> torch.Generator:
    """A CPU torch generator seeded from the parts (seed, purpose, epoch, batch, ...)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(*parts))


# ---- Python streams: the order of samples and batches, caption rules, crops, colours ---------------


def batch_order(seed: int, epoch: int) -> random.Random:
    """Flips and the order of samples and batches of one epoch (engine/data/plan.py)."""
    return random.Random(f"batches:{seed}:{epoch}")


def caption_rules(seed: int, epoch: int, index: int) -> random.Random:
    """Tag shuffling and dropouts of global batch `index` of `epoch`."""
    return random.Random(f"step:{seed}:{epoch}:{index}")


def random_crop(seed: int, epoch: int, index: int, row: int) -> random.Random:
    return random.Random(f"crop:{seed}:{epoch}:{index}:{row}")


def color_shift(seed: int, epoch: int, index: int, row: int) -> random.Random:
    return random.Random(f"color:{seed}:{epoch}:{index}:{row}")


# ---- torch streams: noise, timesteps, the VAE's sampling, the LoRA dropouts ------------------------


def step_noise(seed: int, epoch: int, index: int) -> torch.Generator:
    """Noise, offsets and timesteps of global batch `index` of `epoch`."""
    return derive_generator(seed, "step", epoch, index)


def vae_sample(seed: int, epoch: int, index: int, row: int) -> torch.Generator:
    """The VAE's latent sample of one image of a step (latents not cached)."""
    return derive_generator(seed, "vae", epoch, index, row)


def cached_latent(seed: int, path: Path, flip: bool) -> torch.Generator:
    """The VAE's latent sample of one image when latents are cached (once per image and flip)."""
    return derive_generator(seed, "latents", path, flip)


def dropout_seed(seed: int, epoch: int, index: int, process: int) -> int:
    """The seed of torch's global generator for one step of one process: the LoRA dropouts draw
    from it, so it is set per step (a resumed run draws what the uninterrupted one did)."""
    return derive_seed(seed, "dropout", epoch, index, process)
