"""Latents cached beside the images: reused when image, crop, flip and VAE match; re-encoded otherwise."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.schema import ModelFamily
from engine.data.buckets import Placement
from engine.data.latent_disk_cache import (
    LatentDiskCache,
    LatentRequest,
    cache_path,
    vae_fingerprint,
)
from engine.data.latents import encode_images, load_image
from engine.models.tiny import build_tiny

PLACE = Placement(bucket=(64, 48), resized=(64, 48), crop_left=0, crop_top=0)


@pytest.fixture(scope="module")
def vaes():
    """Two tiny VAEs with different weights."""
    return build_tiny(ModelFamily.SD1, seed=1).vae, build_tiny(ModelFamily.SD1, seed=2).vae


def write_image(path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def images(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(paths):
        write_image(path, i)
    return paths


class CountingLoader:
    def __init__(self):
        self.loaded = []

    def __call__(self, path, placement, flip):
        self.loaded.append((path.name, flip))
        return load_image(path, placement, flip)


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def requests(paths, flip=False, placement=PLACE):
    return [LatentRequest(p, placement, flip) for p in paths]


def per_image(n: int, seed: int = 7) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_per_image_generators_make_a_latent_independent_of_its_batch(vaes, images):
    vae = vaes[0]
    LatentDiskCache(vae).load_or_encode(requests(images[:1]), per_image(1))  # only a.png cached
    cache = LatentDiskCache(vae)
    both = cache.load_or_encode(requests(images), per_image(2))  # a.png read, b.png encoded
    assert (cache.stats.reused, cache.stats.encoded) == (1, 1)
    pixels = torch.stack([load_image(p, PLACE, False) for p in images])
    plain = encode_images(vae, pixels, per_image(2))
    assert torch.allclose(both, plain, atol=1e-5)  # the VAE batch size may move the last bits only
    assert torch.equal(both[0], LatentDiskCache(vae).load_or_encode(requests(images[:1]), per_image(1))[0])
    with pytest.raises(ValueError, match="1 generators for 2 requests"):
        cache.load_or_encode(requests(images), per_image(1))


def test_first_run_writes_files_and_equals_plain_encoding(vaes, images):
    vae = vaes[0]
    cache = LatentDiskCache(vae)
    latents = cache.load_or_encode(requests(images), gen())
    pixels = torch.stack([load_image(p, PLACE, False) for p in images])
    assert torch.equal(latents, encode_images(vae, pixels, gen()))  # same noise, same arithmetic
    assert (cache.stats.reused, cache.stats.encoded, dict(cache.stats.reasons)) == (0, 2, {"missing": 2})
    assert cache_path(images[0], (64, 48), False).name == "a.png.64x48.latents.safetensors"
    assert sorted(p.name for p in images[0].parent.iterdir()) == [
        "a.png", "a.png.64x48.latents.safetensors", "b.png", "b.png.64x48.latents.safetensors",
    ]  # no temporary files left behind


def test_a_later_run_reuses_every_file(vaes, images):
    vae = vaes[0]
    first = LatentDiskCache(vae).load_or_encode(requests(images), gen())
    loader = CountingLoader()
    cache = LatentDiskCache(vae, load_pixels=loader)
    again = cache.load_or_encode(requests(images), gen())
    assert torch.equal(first, again)
    assert loader.loaded == [] and (cache.stats.reused, cache.stats.encoded) == (2, 0)
    # the file holds the distribution: another seed draws another sample from the same cache
    other = cache.load_or_encode(requests(images), gen(8))
    assert not torch.equal(other, first) and cache.stats.reused == 4
    assert "2 reused" not in cache.stats.describe() and "4 reused, 0 encoded" in cache.stats.describe()


def test_a_changed_image_is_encoded_again_even_with_the_same_size_and_mtime(vaes, images):
    vae = vaes[0]
    before = LatentDiskCache(vae).load_or_encode(requests(images), gen())
    stat = images[1].stat()
    write_image(images[1], 99)  # same size in pixels; new content
    os.utime(images[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    loader = CountingLoader()
    cache = LatentDiskCache(vae, load_pixels=loader)
    after = cache.load_or_encode(requests(images), gen())
    assert loader.loaded == [("b.png", False)]
    assert dict(cache.stats.reasons) == {"image changed": 1} and (cache.stats.reused, cache.stats.encoded) == (1, 1)
    assert torch.equal(after[0], before[0]) and not torch.equal(after[1], before[1])
    # and the file was replaced: the next run reuses both again
    third = LatentDiskCache(vae)
    assert torch.equal(third.load_or_encode(requests(images), gen()), after) and third.stats.reused == 2


def test_another_vae_is_encoded_again(vaes, images):
    first, second = vaes
    LatentDiskCache(first).load_or_encode(requests(images), gen())
    cache = LatentDiskCache(second)
    latents = cache.load_or_encode(requests(images), gen())
    assert dict(cache.stats.reasons) == {"other VAE": 2} and cache.stats.encoded == 2
    pixels = torch.stack([load_image(p, PLACE, False) for p in images])
    assert torch.equal(latents, encode_images(second, pixels, gen()))


def test_flip_and_crop_are_part_of_the_key(vaes, images):
    vae = vaes[0]
    LatentDiskCache(vae).load_or_encode(requests(images), gen())
    cache = LatentDiskCache(vae)
    cache.load_or_encode(requests(images, flip=True), gen())
    assert dict(cache.stats.reasons) == {"missing": 2}
    assert cache_path(images[0], (64, 48), True).name == "a.png.64x48_flip.latents.safetensors"
    assert cache_path(images[0], (64, 48), True).exists()
    shifted = Placement(bucket=(64, 48), resized=(72, 54), crop_left=4, crop_top=3)
    cache = LatentDiskCache(vae)
    cache.load_or_encode(requests(images, placement=shifted), gen())
    assert dict(cache.stats.reasons) == {"other crop": 2}


def test_an_unreadable_file_is_rebuilt(vaes, images):
    vae = vaes[0]
    LatentDiskCache(vae).load_or_encode(requests(images), gen())
    path = cache_path(images[0], (64, 48), False)
    path.write_bytes(path.read_bytes()[:40])  # cut short, as by a crash
    cache = LatentDiskCache(vae)
    cache.load_or_encode(requests(images), gen())
    assert dict(cache.stats.reasons) == {"unreadable cache file": 1}
    assert LatentDiskCache(vae).load_or_encode(requests(images[:1]), gen()) is not None


def test_vae_fingerprint_covers_the_encoder_only(vaes):
    import copy

    vae = copy.deepcopy(vaes[0])
    base = vae_fingerprint(vae)
    assert base == vae_fingerprint(vaes[0]) and base != vae_fingerprint(vaes[1])
    with torch.no_grad():
        vae.decoder.conv_out.weight.add_(1.0)  # a decoder-only change: same latents, same caches
    assert vae_fingerprint(vae) == base
    with torch.no_grad():
        vae.encoder.conv_in.weight[0, 0, 0, 0] += 1e-3
    assert vae_fingerprint(vae) != base
