"""One training micro-batch: captions -> conditioning, latents -> noisy latents, UNet -> loss.

Every random draw of the step comes from generators derived from (seed, epoch, batch index,
process), so the same config and seed give the same run, and a resumed run the same steps.
"""

from __future__ import annotations

import random

import torch

from engine.config.schema import ModelFamily
from engine.data.buckets import crop_ltrb_for_sdxl, crop_offsets, sdxl_crop_top_left
from engine.data.captions import apply_rules
from engine.data.latents import encode_images, load_image
from engine.data.plan import Sample, steps_before
from engine.run.losses import batch_loss_value
from engine.run.noise import make_noise, make_noisy_latents, sample_timesteps, v_target
from engine.run.setup import derive_generator
from engine.text.cache import encode_captions


def batch_captions(session, batch: list[Sample], epoch: int, rng: random.Random, step: int = 0) -> list[str]:
    """Each sample's caption under its folder's rules, `step` optimizer steps into the run."""
    total = session.plan.total_steps
    return [
        apply_rules(session.captions[s.item.record.path], s.item.record.rules, epoch=epoch, rng=rng, step=step, total_steps=total)
        for s in batch
    ]


def batch_latents(session, batch: list[Sample], epoch: int, index: int, rows: list[int]) -> torch.Tensor:
    """Latents of the samples at `rows` of the global batch: from the cache, or encoded now with a
    crop and VAE noise drawn per sample (so they do not depend on how the batch is split)."""
    chosen = [batch[i] for i in rows]
    if session.latents is not None:
        return torch.stack([session.latents.get(s.item.record.path, s.flip) for s in chosen])
    seed = session.cfg.training.seed

    def load(row: int, sample: Sample) -> torch.Tensor:
        crop = None
        if session.cfg.dataset.random_crop:
            crop = crop_offsets(sample.item.choice, random.Random(f"crop:{seed}:{epoch}:{index}:{row}"))
        color = random.Random(f"color:{seed}:{epoch}:{index}:{row}") if session.cfg.dataset.color_aug else None
        return load_image(sample.item.record.path, sample.item.choice, sample.flip, crop, color)

    # dataset.max_data_loader_n_workers: decode the batch's images on that many threads
    pool = session.image_loader()
    pixels = list(pool.map(load, rows, chosen)) if pool else [load(r, s) for r, s in zip(rows, chosen)]
    generators = [derive_generator(seed, "vae", epoch, index, row) for row in rows]
    vae = session.components.vae
    vae.to(session.accelerator.device)
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


def conditioning(session, captions: list[str]):
    """The UNet's conditioning: from the text-encoder cache when setup built one (frozen encoders,
    fixed captions; engine/text/cache.py), else encoded now, with gradients only when a text
    encoder trains (a frozen encoder needs no graph)."""
    device = session.accelerator.device
    cache = session.text_cache
    if cache is not None:
        return cache.conditioning(captions, device)
    with torch.set_grad_enabled(session.train_text_encoder), session.accelerator.autocast():
        return encode_captions(
            session.components, captions, session.cfg.model, device, weighted=session.cfg.dataset.weighted_captions
        )


def batch_loss(session, batch: list[Sample], epoch: int, index: int) -> torch.Tensor:
    """The loss of this process's part of global batch `index` of `epoch`.

    Every random draw is made for the whole global batch from generators derived from
    (seed, epoch, index) and then cut to this process's rows: N processes with batch b draw
    exactly what one process with batch N*b draws.
    """
    cfg, acc, model = session.cfg, session.accelerator, session.components
    tr = cfg.training
    device = acc.device
    rows = rank_rows(len(batch), acc.process_index, acc.num_processes)
    rng = random.Random(f"step:{tr.seed}:{epoch}:{index}")
    generator = derive_generator(tr.seed, "step", epoch, index)
    # the LoRA dropouts draw from torch's global generator: seed it per step too, so a resumed run
    # draws exactly what the uninterrupted one did
    torch.manual_seed(derive_generator(tr.seed, "dropout", epoch, index, acc.process_index).initial_seed())

    captions = [batch_captions(session, batch, epoch, rng, steps_before(session.plan, epoch, index))[i] for i in rows]
    own = batch_latents(session, batch, epoch, index, rows)
    latents = torch.zeros((len(batch), *own.shape[1:]), dtype=own.dtype)
    latents[rows] = own  # other processes' rows stay zero: only their random draws matter here
    cond = conditioning(session, captions)

    noise = make_noise(
        latents,
        generator,
        noise_offset=tr.noise_offset,
        adaptive_noise_scale=tr.adaptive_noise_scale,
        noise_offset_random_strength=tr.noise_offset_random_strength,
        multires_iterations=tr.multires_noise_iterations,
        multires_discount=tr.multires_noise_discount,
    )
    timesteps = sample_timesteps(len(batch), tr.min_timestep, tr.max_timestep, generator)
    alphas = session.alphas_cumprod
    noisy = make_noisy_latents(
        latents, noise, timesteps, alphas, generator,
        ip_noise_gamma=tr.ip_noise_gamma, ip_noise_gamma_random_strength=tr.ip_noise_gamma_random_strength,
    )
    if cfg.model.v_parameterization:
        target = v_target(latents, noise, timesteps, alphas)
    else:
        target = noise

    noisy, target, timesteps = noisy[rows].to(device), target[rows].to(device), timesteps[rows].to(device)
    batch = [batch[i] for i in rows]
    extra = {}
    if model.family == ModelFamily.SDXL:
        extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": sdxl_time_ids(batch).to(device)}
    with acc.autocast():
        pred = model.unet(noisy.to(session.weight_dtype), timesteps, cond.hidden, **extra).sample

    weights = torch.tensor(
        [cfg.dataset.prior_loss_weight if s.item.record.is_reg else 1.0 for s in batch], device=device
    )
    return batch_loss_value(
        pred.float(),
        target.float(),
        timesteps,
        sample_weights=weights,
        alphas_cumprod=alphas.to(device),
        all_snr=session.all_snr,
        loss_type=tr.loss_type,
        huber_c=tr.huber_c,
        huber_schedule=tr.huber_schedule,
        min_snr_gamma=tr.min_snr_gamma,
        v_prediction=cfg.model.v_parameterization,
        v_pred_like_loss=tr.v_pred_like_loss,
        debiased_estimation=tr.debiased_estimation_loss,
    )
