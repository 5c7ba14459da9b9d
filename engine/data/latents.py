"""Images to VAE latents: load, resize and crop to the image's bucket, encode (and cache).

The VAE always runs in fp32: SD's VAEs overflow in fp16 (SDXL's notably), and it runs once per
image when latents are cached, so its precision costs little.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.buckets import Placement
from engine.errors import DatasetError


def color_augment(pixels: np.ndarray, rng: random.Random) -> np.ndarray:
    """sd-scripts' color_aug on an (h, w, 3) uint8 RGB image: a third of the time, either a hue
    shift of up to 8 units of OpenCV's 180-unit hue circle (+-16 degrees) or a gamma in
    [0.95, 1.05] applied to the 0-255 values; otherwise the image unchanged."""
    from PIL import Image

    if rng.random() > 0.33:
        return pixels
    if rng.random() > 0.5:
        shift_degrees = rng.uniform(-8.0, 8.0) * 2.0
        hsv = np.asarray(Image.fromarray(pixels, "RGB").convert("HSV")).copy()
        hue = hsv[:, :, 0].astype(np.float32) + shift_degrees * 256.0 / 360.0  # PIL: 256 hue units
        hsv[:, :, 0] = np.mod(np.round(hue), 256).astype(np.uint8)
        return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    gamma = rng.uniform(0.95, 1.05)
    return np.clip(pixels.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)


def load_image(
    path: Path,
    choice: Placement,
    flip: bool,
    crop_left_top: tuple[int, int] | None = None,
    color_rng: random.Random | None = None,
) -> torch.Tensor:
    """(3, h, w) float tensor in [-1, 1]: resized to cover the bucket, cropped, colour-augmented
    when `color_rng` is given (dataset.color_aug), optionally mirrored."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != choice.resized:
                img = img.resize(choice.resized, Image.Resampling.LANCZOS)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read this image ({exc}); remove it or re-save it") from None
    left, top = crop_left_top if crop_left_top is not None else (choice.crop_left, choice.crop_top)
    w, h = choice.bucket
    pixels = np.asarray(img.crop((left, top, left + w, top + h)))
    if color_rng is not None:
        pixels = color_augment(pixels, color_rng)
    array = pixels.astype(np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return torch.flip(tensor, dims=[2]) if flip else tensor


@torch.no_grad()
def encode_images(vae, pixels: torch.Tensor, generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Latents scaled by the VAE's factor, sampled from its distribution with our generator(s).

    With one generator per image, an image's latent does not depend on which other images share
    its VAE batch (vae_batch_size, the split of a batch over processes).
    """
    dist = vae.encode(pixels.to(vae.device, torch.float32)).latent_dist
    if isinstance(generator, list):
        noise = torch.stack([torch.randn(dist.mean.shape[1:], generator=g, dtype=torch.float32) for g in generator])
    else:
        noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(vae.device)
    latents = dist.mean + dist.std * noise
    return latents * vae.config.scaling_factor


@dataclass
class LatentCache:
    """Latents of every (image, flip) pair the plan uses, kept on the CPU, keyed by path and flip."""

    latents: dict[tuple[Path, bool], torch.Tensor]

    def get(self, path: Path, flip: bool) -> torch.Tensor:
        return self.latents[(path, flip)]


class ImageLoader:
    """Threads that decode a step's images for latents that are not cached
    (dataset.max_data_loader_n_workers). With persistent workers they live for the whole run,
    else they are started afresh each epoch, as sd-scripts' data loader workers are."""

    def __init__(self, workers: int, persistent: bool) -> None:
        self.workers, self.persistent = workers, persistent
        self._pool = None

    def map(self, fn, *iterables) -> list:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lora-wizard-images")
        return list(self._pool.map(fn, *iterables))

    @property
    def running(self) -> bool:
        return self._pool is not None

    def end_epoch(self) -> None:
        if not self.persistent:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
