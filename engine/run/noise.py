"""Noise, timesteps and the forward diffusion process, without a scheduler object.

The math follows kohya-ss/sd-scripts (`get_noise_noisy_latents_and_timesteps`, `apply_noise_offset`,
`pyramid_noise_like`, `fix_noise_scheduler_betas_for_zero_terminal_snr`) and diffusers'
`DDPMScheduler` (`add_noise`, `get_velocity`), which sd-scripts trains with. Every random draw comes
from the `torch.Generator` passed in, which must live on the latents' device; draws happen in
sd-scripts' order (noise, offset strength, offset, multires levels; then timesteps; then the
input-perturbation strength and noise), so on the CPU a generator seeded like sd-scripts' global
RNG gives the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Stable Diffusion's training schedule (sd-scripts: DDPMScheduler(0.00085, 0.012, "scaled_linear", 1000))
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_TRAIN_TIMESTEPS = 1000


def ddpm_betas(
    beta_start: float = SD_BETA_START, beta_end: float = SD_BETA_END, steps: int = SD_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """The "scaled_linear" schedule: linear in sqrt(beta), float32, as diffusers builds it."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float32) ** 2


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose last step has zero SNR (pure noise), keeping the first step's signal level.

    Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1,
    https://arxiv.org/abs/2305.08891 (what sd-scripts' --zero_terminal_snr applies).
    """
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    cumprod = root**2
    alphas = torch.cat([cumprod[:1], cumprod[1:] / cumprod[:-1]])
    return 1 - alphas


def ddpm_alphas_cumprod(*, zero_terminal_snr: bool = False) -> torch.Tensor:
    """alphas_cumprod of SD's training schedule (1000 steps), optionally rescaled to zero terminal SNR.

    Note: sd-scripts computes the SNR used by min-SNR / debiased weighting *before* the rescale
    (`prepare_scheduler_for_custom_training` runs first), so to match it pass
    `compute_snr(ddpm_alphas_cumprod())` to the loss weighting even when training with the rescale.
    """
    betas = ddpm_betas()
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return alphas_cumprod_from_betas(betas)


def make_noise(
    latents: torch.Tensor,
    generator: torch.Generator,
    *,
    noise_offset: float = 0.0,
    adaptive_noise_scale: float | None = None,
    noise_offset_random_strength: bool = False,
    multires_iterations: int = 0,
    multires_discount: float = 0.3,
) -> torch.Tensor:
    """Gaussian noise like `latents`, with sd-scripts' optional offset and multi-resolution noise.

    Offset noise (https://www.crosslabs.org/blog/diffusion-with-offset-noise) adds one random value
    per sample and channel, times `noise_offset`. With random strength the offset is first scaled by
    one uniform draw in [0, 1) shared by the whole batch (sd-scripts draws `rand(1)`). The adaptive
    scale adds `adaptive_noise_scale * |mean of the latent channel|`, clamped at zero.
    Multires noise is applied after the offset when both are set, as in sd-scripts.
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if noise_offset:
        offset = noise_offset
        if noise_offset_random_strength:
            offset = torch.rand(1, generator=generator, device=latents.device) * noise_offset
        noise = apply_noise_offset(latents, noise, offset, adaptive_noise_scale, generator)
    if multires_iterations:
        noise = pyramid_noise_like(noise, generator, multires_iterations, multires_discount)
    return noise


def apply_noise_offset(
    latents: torch.Tensor,
    noise: torch.Tensor,
    offset: float | torch.Tensor,
    adaptive_noise_scale: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    if adaptive_noise_scale is not None:
        channel_mean = latents.mean(dim=(2, 3), keepdim=True).abs()
        offset = torch.clamp(offset + adaptive_noise_scale * channel_mean, min=0.0)
    b, c = latents.shape[:2]
    per_channel = torch.randn((b, c, 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
    return noise + offset * per_channel


def pyramid_noise_like(
    noise: torch.Tensor,
    generator: torch.Generator,
    iterations: int,
    discount: float,
    ratios: Sequence[float] | None = None,
) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise, normalised back to unit std.

    Level i adds noise drawn at size/r**i, upsampled bilinearly, times discount**i, with r uniform
    in [2, 4) per level; it stops after the level that reaches a side of 1. `ratios` fixes the r
    values instead of drawing them (sd-scripts draws them from Python's `random`).
    https://wandb.ai/johnowhitaker/multires_noise/reports/Multi-Resolution-Noise-for-Diffusion-Model-Training--VmlldzozNjYyOTU2
    """
    b, c, h, w = noise.shape
    for i in range(iterations):
        if ratios is not None:
            r = ratios[i]
        else:
            r = 2.0 + 2.0 * float(torch.rand((), generator=generator, device=generator.device))
        small_h, small_w = max(1, int(h / (r**i))), max(1, int(w / (r**i)))
        level = torch.randn((b, c, small_h, small_w), generator=generator, device=noise.device, dtype=noise.dtype)
        noise = noise + F.interpolate(level, size=(h, w), mode="bilinear") * discount**i
        if small_h == 1 or small_w == 1:
            break
    return noise / noise.std()


def sample_timesteps(batch: int, min_t: int, max_t: int, generator: torch.Generator) -> torch.Tensor:
    """One timestep per sample, uniform in [min_t, max_t), as int64 on the generator's device."""
    if not 0 <= min_t < max_t:
        raise ValueError(f"timesteps are drawn from [min_t, max_t): need 0 <= {min_t} < {max_t}")
    return torch.randint(min_t, max_t, (batch,), generator=generator, device=generator.device)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.flatten().reshape(-1, *([1] * (like.ndim - 1)))


def make_noisy_latents(
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    ip_noise_gamma: float | None = None,
    ip_noise_gamma_random_strength: bool = False,
) -> torch.Tensor:
    """q(x_t | x_0): sqrt(acp_t) * latents + sqrt(1 - acp_t) * noise (diffusers' add_noise).

    Input perturbation (Ning et al., https://arxiv.org/abs/2301.11706): with `ip_noise_gamma`, the
    noise put into the input is `noise + gamma * randn` while the training target stays `noise`.
    With random strength, gamma is scaled by one uniform draw shared by the batch.
    """
    if ip_noise_gamma:
        if generator is None:
            raise ValueError("ip_noise_gamma draws extra noise: pass the step's generator")
        strength = ip_noise_gamma
        if ip_noise_gamma_random_strength:
            strength = torch.rand(1, generator=generator, device=latents.device) * ip_noise_gamma
        extra = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + strength * extra
    acp = alphas_cumprod.to(device=latents.device, dtype=latents.dtype)[timesteps.to(latents.device)]
    return _per_sample(acp**0.5, latents) * latents + _per_sample((1 - acp) ** 0.5, latents) * noise


def v_target(
    latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The v-prediction target sqrt(acp_t) * noise - sqrt(1 - acp_t) * latents (Salimans & Ho,
    https://arxiv.org/abs/2202.00512; diffusers' get_velocity)."""
    acp = alphas_cumprod.to(device=latents.device, dtype=latents.dtype)[timesteps.to(latents.device)]
    return _per_sample(acp**0.5, latents) * noise - _per_sample((1 - acp) ** 0.5, latents) * latents
