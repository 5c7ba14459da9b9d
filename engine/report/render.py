"""The contact sheet's images: the base model loaded again, the run's network built on it as the
run built it (engine/run/build.py: the same modules, ranks and block settings), and each saved
file's weights loaded into that network at each strength. Images are made by the sampler the run
samples with (engine/run/sampling.py `generate_samples`), so a prompt's seed gives the same noise in
every cell of its column."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from engine.config.schema import TrainConfig
from engine.events import SilentReporter
from engine.run.prompts import SamplePrompt

STRENGTHS = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class Row:
    label: str  # "epoch 2", "step 100", "final (epoch 3)"
    path: Path  # the LoRA file
    images: list[list]  # [prompt][strength] PIL images


@dataclass(frozen=True)
class Sheet:
    prompts: list[SamplePrompt]
    strengths: tuple[float, ...]
    rows: list[Row]


def render_sheet(cfg: TrainConfig, files: Sequence[tuple[str, Path]], prompts: list[SamplePrompt]) -> Sheet:
    """Every (label, LoRA file) at every strength for every prompt. Strength 0 is the base
    model: made once per prompt, before the network exists, and shown in every row."""
    from engine.models.loading import load_base_model
    from engine.run.build import build_network, starting_network
    from engine.run.setup import quiet_heavy_imports, weight_dtype_for

    quiet_heavy_imports()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = weight_dtype_for(cfg.optim.mixed_precision.value) if cuda else torch.float32
    threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(1)  # as a CPU run computes (engine/run/setup.py): on a busy CPU also the faster
    model = load_base_model(cfg.model.base_model, cfg.model.family, vae=cfg.model.vae, v_parameterization=cfg.model.v_parameterization)
    network = None
    try:
        _ready(model, device, dtype)
        base = _images(cfg, model, None, prompts, device, dtype)
        net_cfg, start = starting_network(cfg, SilentReporter())
        network = build_network(cfg, net_cfg, model, start, SimpleNamespace(device=device), dtype, SilentReporter())
        rows = []
        for label, path in files:
            network.load_weights(path)
            by_strength = {0.0: base}
            for strength in STRENGTHS[1:]:
                network.set_multiplier(strength)
                by_strength[strength] = _images(cfg, model, network, prompts, device, dtype)
            rows.append(Row(label, path, [[by_strength[s][i] for s in STRENGTHS] for i in range(len(prompts))]))
    finally:
        if network is not None:
            network.remove()
        del model, network
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        torch.set_num_threads(threads)
    return Sheet(prompts, STRENGTHS, rows)


def _ready(model, device: torch.device, dtype: torch.dtype) -> None:
    for module in (model.unet, model.vae, *model.text_encoders):
        module.requires_grad_(False)
        module.eval()
    model.vae.to(device, dtype=torch.float32)  # SD's VAEs overflow in fp16 (as in training)
    for module in (model.unet, *model.text_encoders):
        module.to(device, dtype=dtype)


def _images(cfg: TrainConfig, model, network, prompts: list[SamplePrompt], device, dtype) -> list:
    """One image per prompt, read back from the sampler's files (written to a temporary folder)."""
    from PIL import Image

    from engine.run.sampling import generate_samples

    with tempfile.TemporaryDirectory(prefix="lora-wizard-report-") as folder:
        paths = generate_samples(
            model, network, prompts,
            sampler=cfg.sampling.sample_sampler, seed=cfg.training.seed, out_dir=Path(folder), tag="cell",
            device=device, dtype=dtype, clip_skip=cfg.model.clip_skip, v_parameterization=cfg.model.v_parameterization,
            max_token_length=cfg.model.max_token_length, default_size=cfg.dataset.width_height,
        )
        images = []
        for path in paths[: len(prompts)]:  # the last file is the sampler's own grid
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
    return images
