"""What the benchmark trains on: random-weight model folders and generated images.

A full-size model with random weights is written once as a diffusers folder and reused, so every
row loads it through the product's own loader (engine.models.loading.load_base_model), exactly as
a user's diffusers folder would be. The weights are stored in bf16 (SD1.5 2.1 GB, SDXL 6.9 GB);
the engine casts them to the run's dtypes as it does for any model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from engine.config.schema import ModelFamily
from engine.models.loading import CONFIG_ROOT, TEXT_ENCODERS

#: bump when the folder layout or the way weights are drawn changes: old folders are not reused
FOLDER_VERSION = 1
MODEL_SEED = 0
FAMILIES = {"sd15": ModelFamily.SD1, "sdxl_base": ModelFamily.SDXL}
SAVE_DTYPE = torch.bfloat16


class BenchError(Exception):
    """Something the person running the benchmark can fix; the message says what."""


def random_model_folder(config_folder: str, cache: Path, device: torch.device, say: Callable[[str], None]) -> Path:
    """The diffusers folder of `config_folder`'s architecture with random weights, built on first use."""
    target = cache / f"{config_folder}-random-v{FOLDER_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    source = CONFIG_ROOT / config_folder
    components = _build_components(source, FAMILIES[config_folder], device)
    need = sum(p.numel() for m in components.values() for p in m.parameters()) * SAVE_DTYPE.itemsize
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < need * 1.1:
        raise BenchError(
            f"the random {config_folder} model needs {need / 2**30:.1f} GiB in {cache}, which has "
            f"{free / 2**30:.1f} GiB free: free some space or pass --model-cache DIR on a larger disk"
        )
    say(f"writing random-weight {config_folder} ({need / 2**30:.1f} GiB, {free / 2**30:.0f} GiB free) to {target}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{config_folder}-", dir=cache))
    try:
        shutil.copy(source / "model_index.json", tmp / "model_index.json")
        shutil.copytree(source / "scheduler", tmp / "scheduler")
        for name, module in components.items():
            module.to("cpu", SAVE_DTYPE).save_pretrained(tmp / name)
        (tmp / "BENCH.json").write_text(
            json.dumps({"from": str(source), "seed": MODEL_SEED, "dtype": str(SAVE_DTYPE)}) + "\n", encoding="utf-8"
        )
        os.rename(tmp, target)  # atomic: a half-written folder is never picked up
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_components(source: Path, family: ModelFamily, device: torch.device) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoders from the shipped configs, randomly initialised on `device`
    (on a GPU the init of SDXL's 3.4 B parameters takes a second, on a CPU about a minute)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(MODEL_SEED)
        out = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(source, subfolder="unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(source, subfolder="vae")),
        }
        for slot in TEXT_ENCODERS[family]:
            cls = CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel
            out[slot.subfolder] = cls(CLIPTextConfig.from_pretrained(source / slot.subfolder))
    return out


def write_dataset(root: Path, count: int, side: int, seed: int = 0) -> Path:
    """`count` square JPEGs of `side` px with a caption each, in the kohya layout (1 repeat).

    Smooth pictures (a gradient and two shapes) decode about as fast as photos of the same size;
    each caption differs, so a text-encoder cache holds one entry per image as with real data."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder = root / "1_bench"
    folder.mkdir(parents=True, exist_ok=True)
    ramp = Image.linear_gradient("L").resize((side, side))
    for i in range(count):
        colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)]
        img = Image.composite(Image.new("RGB", (side, side), colours[0]), Image.new("RGB", (side, side), colours[1]), ramp)
        draw = ImageDraw.Draw(img)
        for colour in colours[2:]:
            x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 8, side // 3)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        img.save(folder / f"img_{i:04d}.jpg", quality=92)
        (folder / f"img_{i:04d}.txt").write_text(f"bench, picture {i}, two round shapes, gradient background\n", encoding="utf-8")
    return root
