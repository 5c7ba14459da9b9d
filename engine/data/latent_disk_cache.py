"""Latents cached in files beside the images (`dataset.cache_latents_to_disk`), reused by later runs.

One file per image, bucket and flip: `img001.png` trained in the 512x768 bucket gets
`img001.png.512x768.latents.safetensors` (and `img001.png.512x768_flip.latents.safetensors` when
flipped). The full image name is kept so `a.png` and `a.jpg` never share a file.

What a file holds, and why:
* the VAE's latent distribution, `mean` and `std` (fp32), not a sample of it. The sample is drawn
  when the file is read, with the run's own generator, exactly as `latents.encode_images` does, so
  a run with the disk cache gives the same latents as a run without it, and a later run with
  another seed draws its own sample instead of inheriting the first run's.
* metadata that must all match for the file to be used:
  - `image_sha256`, the SHA-256 of the image file's bytes. A content hash, not size + mtime:
    mtimes move without the content changing (a copy, a checkout: a wasted re-encode) and can stay
    put while it does (tools that preserve times: a stale latent). Hashing is cheap beside the
    decode and VAE pass it saves (a few ms for a 5 MB PNG).
  - `bucket`, `resized`, `crop` (the placement) and `flip`: the pixels that were encoded.
  - `vae`, a fingerprint of the VAE: its config and the SHA-256 of every encoder-side tensor
    (`encoder.*`, `quant_conv.*`: the decoder does not affect latents, so VAEs that differ only in
    the decoder, like SD1.5's ft-MSE one, share caches).
  - `format`, this module's layout version.
  Anything else, or an unreadable file, means the image is encoded again and the file replaced.
Files are written atomically (temporary file + rename), so an interrupted run never leaves a
half-written cache that a later run would trust.

sd-scripts' `<stem>.npz` caches check only the size and flip keys (a changed image or another VAE
is silently served stale); these files are ours alone and never read or written as npz.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.data.buckets import Placement
from engine.data.latents import load_image
from engine.errors import DatasetError
from engine.fileio import atomic_write

CACHE_FORMAT = "1"
SUFFIX = ".latents.safetensors"
_ENCODER_PREFIXES = ("encoder.", "quant_conv.")


@dataclass(frozen=True, slots=True)
class LatentRequest:
    """One latent a run needs: the image, where it is resized and cropped, and whether it is mirrored."""

    image: Path
    placement: Placement
    flip: bool


@dataclass
class DiskCacheStats:
    """What the cache did: files reused, images encoded, and why each one was encoded."""

    reused: int = 0
    encoded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
        return f"latent cache on disk: {self.reused} reused, {self.encoded} encoded" + (f" ({why})" if why else "")


def cache_path(image: Path, bucket: tuple[int, int], flip: bool) -> Path:
    w, h = bucket
    return image.with_name(f"{image.name}.{w}x{h}{'_flip' if flip else ''}{SUFFIX}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read this image ({exc})") from None
    return digest.hexdigest()


def vae_fingerprint(vae) -> str:
    """SHA-256 of the VAE's config and of every tensor that takes part in encoding."""
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    tensors = [(k, v) for k, v in vae.state_dict().items() if k.startswith(_ENCODER_PREFIXES)]
    if not tensors:
        raise ValueError("the VAE has no encoder.* / quant_conv.* weights to fingerprint")
    for name, tensor in sorted(tensors):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _metadata(request: LatentRequest, image_sha256: str, vae_id: str) -> dict[str, str]:
    p = request.placement
    return {
        "format": CACHE_FORMAT,
        "image_sha256": image_sha256,
        "bucket": f"{p.bucket[0]}x{p.bucket[1]}",
        "resized": f"{p.resized[0]}x{p.resized[1]}",
        "crop": f"{p.crop_left},{p.crop_top}",
        "flip": "1" if request.flip else "0",
        "vae": vae_id,
    }


def _mismatch(found: dict[str, str], wanted: dict[str, str]) -> str | None:
    """The reason a file cannot be used (None: it can)."""
    if found.get("format") != wanted["format"]:
        return "older cache format"
    if found.get("image_sha256") != wanted["image_sha256"]:
        return "image changed"
    if found.get("vae") != wanted["vae"]:
        return "other VAE"
    if any(found.get(k) != wanted[k] for k in ("bucket", "resized", "crop", "flip")):
        return "other crop"
    return None


class LatentDiskCache:
    """Latents from files beside the images, encoding (and writing) the ones that are missing or stale.

        cache = LatentDiskCache(vae)        # fingerprints the VAE once
        latents = cache.load_or_encode(requests, generator)
        reporter.notice(cache.stats.describe())
    """

    def __init__(self, vae, *, vae_id: str | None = None, load_pixels: Callable = load_image):
        self.vae = vae
        self.vae_id = vae_id or vae_fingerprint(vae)
        self.load_pixels = load_pixels
        self.stats = DiskCacheStats()
        self._digests: dict[Path, str] = {}  # per image, so a flipped and an unflipped use hash it once

    def image_sha256(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = file_sha256(path)
        return self._digests[path]

    @torch.no_grad()
    def load_or_encode(
        self, requests: Sequence[LatentRequest], generator: torch.Generator | Sequence[torch.Generator]
    ) -> torch.Tensor:
        """(b, c, h/8, w/8) scaled latents for requests of one bucket, sampled with `generator` (one for
        the batch, or one per request as `setup.cache_all_latents` passes them).

        Equal to `latents.encode_images(vae, pixels, generator)` for the same pixels: the same noise
        draws and the same arithmetic, on the VAE's device. With one generator per request a latent
        does not depend on which other images were cached or encoded beside it.
        """
        if not requests:
            raise ValueError("load_or_encode needs at least one request")
        wanted = [_metadata(r, self.image_sha256(r.image), self.vae_id) for r in requests]
        found: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for request, meta in zip(requests, wanted):
            found.append(self._read(request, meta))
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            means, stds = self._encode([requests[i] for i in missing])
            for k, i in enumerate(missing):
                found[i] = (means[k], stds[k])
                self._write(requests[i], wanted[i], means[k], stds[k])
        self.stats.reused += len(requests) - len(missing)
        self.stats.encoded += len(missing)

        device = self.vae.device
        mean = torch.stack([f[0] for f in found]).to(device)  # type: ignore[index]
        std = torch.stack([f[1] for f in found]).to(device)  # type: ignore[index]
        if isinstance(generator, torch.Generator):
            noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
        else:
            if len(generator) != len(requests):
                raise ValueError(f"{len(generator)} generators for {len(requests)} requests")
            noise = torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=torch.float32) for g in generator])
        return (mean + std * noise.to(device)) * self.vae.config.scaling_factor

    def _read(self, request: LatentRequest, wanted: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        from safetensors import SafetensorError, safe_open

        path = cache_path(request.image, request.placement.bucket, request.flip)
        if not path.exists():
            self.stats.reasons["missing"] += 1
            return None
        tensors = None
        try:
            with safe_open(str(path), framework="pt") as handle:
                reason = _mismatch(handle.metadata() or {}, wanted)
                if reason is None:
                    tensors = handle.get_tensor("mean"), handle.get_tensor("std")
        except (SafetensorError, OSError, KeyError):
            # a cache file, not user data: one cut short by a crash or a full disk is rebuilt
            reason = "unreadable cache file"
        if tensors is None:
            self.stats.reasons[reason or "unreadable cache file"] += 1
        return tensors

    def _encode(self, requests: Sequence[LatentRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([self.load_pixels(r.image, r.placement, r.flip) for r in requests])
        dist = self.vae.encode(pixels.to(self.vae.device, torch.float32)).latent_dist
        return dist.mean.float().cpu(), dist.std.float().cpu()

    def _write(self, request: LatentRequest, meta: dict[str, str], mean: torch.Tensor, std: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = cache_path(request.image, request.placement.bucket, request.flip)
        tensors = {"mean": mean.contiguous(), "std": std.contiguous()}
        try:
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), overwrite=True)
        except OSError as exc:
            raise DatasetError(
                f"cannot write the latent cache {path} ({exc}): make the image folder writable, or set "
                "dataset.cache_latents_to_disk=false to keep latents in memory only"
            ) from None
