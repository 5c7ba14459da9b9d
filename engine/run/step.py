"""One training micro-batch: captions -> conditioning, latents -> noisy latents, UNet -> loss.

Every random draw of the step comes from streams derived from (seed, epoch, batch index, process)
(engine/run/rng.py), so the same config and seed give the same run, and a resumed run the same steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine import rng
from engine.config.schema import ModelFamily, TrainConfig
from engine.data.buckets import crop_ltrb_for_sdxl, crop_offsets, sdxl_crop_top_left
from engine.data.captions import apply_rules
from engine.data.latents import ImageLoader, LatentCache, encode_images, load_image
from engine.data.plan import RunPlan, Sample, steps_before
from engine.run.losses import batch_loss_value
from engine.run.noise import make_noise, make_noisy_latents, sample_timesteps, v_target
from engine.text.cache import TextCache, encode_captions

if TYPE_CHECKING:
    from accelerate import Accelerator

    from engine.models.components import BaseComponents


@dataclass
class StepInputs:
    """What a step reads: the settings, the frozen model, the inputs prepared at setup."""

    cfg: TrainConfig
    model: BaseComponents
    accelerator: Accelerator
    plan: RunPlan  # the run's plan: each image's caption text (before the caption rules), the step count
    latents: LatentCache | None  # None: images are encoded at each step
    text_cache: TextCache | None  # None: captions are encoded at each step
    alphas_cumprod: torch.Tensor  # the training noise schedule, on the CPU (noise is drawn there)
    all_snr: torch.Tensor  # SNR of the plain schedule, on the device (sd-scripts weights by it)
    weight_dtype: torch.dtype  # the frozen weights' dtype
    v_prediction: bool  # the objective (engine/models/prediction.py decided it when the model loaded)
    images: ImageLoader | None = None  # threads that decode images for uncached latents
    train_text_encoder: bool = True  # False once training.stop_text_encoder_training is reached


def batch_captions(inputs: StepInputs, batch: list[Sample], epoch: int, rules: random.Random, step: int = 0) -> list[str]:
    """Each sample's caption under its folder's rules, `step` optimizer steps into the run."""
    plan = inputs.plan
    return [
        apply_rules(plan.captions[s.item.record.path], s.item.record.rules, epoch=epoch, rng=rules, step=step, total_steps=plan.total_steps)
        for s in batch
    ]


def batch_latents(inputs: StepInputs, batch: list[Sample], epoch: int, index: int, rows: list[int]) -> torch.Tensor:
    """Latents of the samples at `rows` of the global batch: from the cache, or encoded now with a
    crop and VAE noise drawn per sample (so they do not depend on how the batch is split)."""
    chosen = [batch[i] for i in rows]
    if inputs.latents is not None:
        return torch.stack([inputs.latents.get(s.item.record.path, s.flip) for s in chosen])
    ds, seed = inputs.cfg.dataset, inputs.cfg.training.seed

    def load(row: int, sample: Sample) -> torch.Tensor:
        crop = crop_offsets(sample.item.choice, rng.random_crop(seed, epoch, index, row)) if ds.random_crop else None
        color = rng.color_shift(seed, epoch, index, row) if ds.color_aug else None
        return load_image(sample.item.record.path, sample.item.choice, sample.flip, crop, color)

    pixels = inputs.images.map(load, rows, chosen) if inputs.images else [load(r, s) for r, s in zip(rows, chosen)]
    generators = [rng.vae_sample(seed, epoch, index, row) for row in rows]
    vae = inputs.model.vae
    vae.to(inputs.accelerator.device)
    return encode_images(vae, torch.stack(pixels), generators).cpu()


def rank_rows(size: int, rank: int, num_processes: int) -> list[int]:
    """Which samples of a global batch of `size` this process trains on.

    The global batch is cut into `num_processes` contiguous, equally sized parts (a short last
    batch is padded by repeating its samples from the start), so every process steps on the same
    number of samples and the averaged gradient is the gradient of the whole batch.
    """
    per_rank = -(-size // num_processes)
    padded = [i % size for i in range(per_rank * num_processes)]
    return padded[rank * per_rank : (rank + 1) * per_rank]


def sdxl_time_ids(batch: list[Sample]) -> torch.Tensor:
    """SDXL's size conditioning per sample: original (h, w), crop top-left (y, x), target (h, w)."""
    rows = []
    for sample in batch:
        record, (bw, bh) = sample.item.record, sample.item.bucket
        box = crop_ltrb_for_sdxl((bw, bh), (record.width, record.height))
        top, left = sdxl_crop_top_left(box, bw, sample.flip)
        rows.append([record.height, record.width, top, left, bh, bw])
    return torch.tensor(rows, dtype=torch.float32)


def conditioning(inputs: StepInputs, captions: list[str]):
    """The UNet's conditioning: from the text-encoder cache when setup built one (frozen encoders,
    fixed captions; engine/text/cache.py), else encoded now, with gradients only when a text
    encoder trains (a frozen encoder needs no graph)."""
    device = inputs.accelerator.device
    if inputs.text_cache is not None:
        return inputs.text_cache.conditioning(captions, device)
    with torch.set_grad_enabled(inputs.train_text_encoder), inputs.accelerator.autocast():
        return encode_captions(
            inputs.model, captions, inputs.cfg.model, device, weighted=inputs.cfg.dataset.weighted_captions
        )


def noised(inputs: StepInputs, latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The UNet's input, its target and the timesteps for the whole global batch, drawn from
    `generator` in a fixed order (noise, timesteps, input-perturbation noise) so every process
    draws the same."""
    tr = inputs.cfg.training
    alphas = inputs.alphas_cumprod
    noise = make_noise(
        latents,
        generator,
        noise_offset=tr.noise_offset,
        adaptive_noise_scale=tr.adaptive_noise_scale,
        noise_offset_random_strength=tr.noise_offset_random_strength,
        multires_iterations=tr.multires_noise_iterations,
        multires_discount=tr.multires_noise_discount,
    )
    timesteps = sample_timesteps(len(latents), tr.min_timestep, tr.max_timestep, generator)
    noisy = make_noisy_latents(
        latents, noise, timesteps, alphas, generator,
        ip_noise_gamma=tr.ip_noise_gamma, ip_noise_gamma_random_strength=tr.ip_noise_gamma_random_strength,
    )
    target = v_target(latents, noise, timesteps, alphas) if inputs.v_prediction else noise
    return noisy, target, timesteps


def batch_loss(inputs: StepInputs, batch: list[Sample], epoch: int, index: int) -> torch.Tensor:
    """The loss of this process's part of global batch `index` of `epoch`.

    Every random draw is made for the whole global batch from streams derived from
    (seed, epoch, index) and then cut to this process's rows: N processes with batch b draw
    exactly what one process with batch N*b draws.
    """
    cfg, acc, model = inputs.cfg, inputs.accelerator, inputs.model
    tr = cfg.training
    device = acc.device
    rows = rank_rows(len(batch), acc.process_index, acc.num_processes)
    rules = rng.caption_rules(tr.seed, epoch, index)
    generator = rng.step_noise(tr.seed, epoch, index)
    torch.manual_seed(rng.dropout_seed(tr.seed, epoch, index, acc.process_index))

    captions = [batch_captions(inputs, batch, epoch, rules, steps_before(inputs.plan, epoch, index))[i] for i in rows]
    own = batch_latents(inputs, batch, epoch, index, rows)
    latents = torch.zeros((len(batch), *own.shape[1:]), dtype=own.dtype)
    latents[rows] = own  # other processes' rows stay zero: only their random draws matter here
    cond = conditioning(inputs, captions)

    noisy, target, timesteps = noised(inputs, latents, generator)
    noisy, target, timesteps = noisy[rows].to(device), target[rows].to(device), timesteps[rows].to(device)
    batch = [batch[i] for i in rows]
    extra = {}
    if model.family == ModelFamily.SDXL:
        extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": sdxl_time_ids(batch).to(device)}
    with acc.autocast():
        pred = model.unet(noisy.to(inputs.weight_dtype), timesteps, cond.hidden, **extra).sample

    weights = torch.tensor([cfg.dataset.prior_loss_weight if s.item.record.is_reg else 1.0 for s in batch], device=device)
    return batch_loss_value(
        pred.float(),
        target.float(),
        timesteps,
        sample_weights=weights,
        alphas_cumprod=inputs.alphas_cumprod.to(device),
        all_snr=inputs.all_snr,
        loss_type=tr.loss_type,
        huber_c=tr.huber_c,
        huber_schedule=tr.huber_schedule,
        min_snr_gamma=tr.min_snr_gamma,
        v_prediction=inputs.v_prediction,
        v_pred_like_loss=tr.v_pred_like_loss,
        debiased_estimation=tr.debiased_estimation_loss,
    )
