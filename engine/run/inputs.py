"""The inputs a run prepares before its first step: every image's latents (dataset.cache_latents),
the text-encoder outputs of every caption when they cannot change (engine/text/cache.py), and the
threads that decode images when latents are not cached."""

from __future__ import annotations

import torch

from engine import rng
from engine.config.schema import TrainConfig
from engine.data.latent_disk_cache import LatentDiskCache, LatentRequest
from engine.data.latents import ImageLoader, LatentCache, encode_images, load_image
from engine.data.plan import RunPlan
from engine.events import Phase, Reporter, StopSignal
from engine.run.distributed import is_main_process
from engine.text.cache import TextCache, build_text_cache


class StoppedDuringSetup(Exception):
    """Ctrl-C arrived while the run was still loading or caching: nothing was trained."""


def cache_latents(cfg: TrainConfig, plan: RunPlan, model, acc, reporter: Reporter, stop: StopSignal | None = None) -> LatentCache:
    """Encode each image the plan uses once (twice with flip_aug), in VAE batches of one bucket
    (one tensor shape); with cache_latents_to_disk, reuse and write the files beside the images.
    The VAE leaves the device afterwards: the steps read the cache."""
    reporter.phase(Phase.CACHING_LATENTS)
    vae = model.vae
    # only the main process writes cache files; the others encode the same latents in memory
    disk = LatentDiskCache(vae) if cfg.dataset.cache_latents_to_disk and is_main_process() else None
    flips = (False, True) if cfg.dataset.flip_aug else (False,)
    by_bucket: dict = {}
    for item in plan.items:
        for flip in flips:
            by_bucket.setdefault(item.bucket, []).append((item, flip))
    latents: dict = {}
    size = cfg.dataset.vae_batch_size
    total = sum(len(group) for group in by_bucket.values())
    done = 0
    reporter.progress(Phase.CACHING_LATENTS, done, total)
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        for start in range(0, len(group), size):
            if stop is not None and stop.requested:
                raise StoppedDuringSetup
            chunk = group[start : start + size]
            keys = [(item.record.path, flip) for item, flip in chunk]
            generators = [rng.cached_latent(cfg.training.seed, path, flip) for path, flip in keys]
            if disk is not None:
                requests = [LatentRequest(item.record.path, item.choice, flip) for item, flip in chunk]
                encoded = disk.load_or_encode(requests, generators).cpu()
            else:
                pixels = torch.stack([load_image(item.record.path, item.choice, flip) for item, flip in chunk])
                encoded = encode_images(vae, pixels, generators).cpu()
            latents.update(zip(keys, encoded))
            done += len(chunk)
            reporter.progress(Phase.CACHING_LATENTS, done, total)
    if disk is not None:
        reporter.notice(disk.stats.describe())
    vae.to("cpu")
    return LatentCache(latents)


def text_cache_for(cfg: TrainConfig, plan: RunPlan, model, acc, reporter: Reporter) -> TextCache | None:
    """The text-encoder outputs of every caption the run can use, or None when a caption rule
    changes captions between uses or a text encoder trains."""
    return build_text_cache(cfg, plan, plan.captions, model, acc, reporter)


def image_loader(cfg: TrainConfig, latents: LatentCache | None) -> ImageLoader | None:
    """Threads for the images a step decodes (latents not cached); none with 0 workers."""
    workers = cfg.dataset.max_data_loader_n_workers
    if latents is not None or workers == 0:
        return None
    return ImageLoader(workers, cfg.dataset.persistent_data_loader_workers)
