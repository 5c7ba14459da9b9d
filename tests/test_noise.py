"""Noise and forward-process math against diffusers and against values produced by sd-scripts.

The sd-scripts values were produced once by running its `get_noise_noisy_latents_and_timesteps` and
`pyramid_noise_like` (kohya-ss/sd-scripts, 2026 snapshot) after
`torch.manual_seed(seed)` (and `random.seed(3)` for the pyramid ratios) on the CPU, and hard-coded
here. sd-scripts uses the global RNGs; a CPU `torch.Generator` seeded the same draws the same
numbers, so equality here means our order of draws is sd-scripts' order.
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import (
    rescale_zero_terminal_snr as diffusers_rescale,
)

from engine.run.noise import (
    ddpm_alphas_cumprod,
    ddpm_betas,
    make_noise,
    make_noisy_latents,
    pyramid_noise_like,
    rescale_zero_terminal_snr,
    sample_timesteps,
    v_target,
)
from tests.support.numeric import float32_close

LATENTS = torch.tensor(
    [
        [[[0.5, -0.25], [1.0, 0.0]], [[-1.0, 0.75], [0.25, 0.5]]],
        [[[0.1, 0.2], [0.3, 0.4]], [[-0.4, -0.3], [-0.2, -0.1]]],
    ]
)


def sd_scheduler(**kw):
    return DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, **kw,
    )


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_schedule_equals_diffusers_ddpm():
    sched = sd_scheduler()
    assert torch.equal(ddpm_betas(), sched.betas)
    assert torch.equal(ddpm_alphas_cumprod(), sched.alphas_cumprod)
    acp = ddpm_alphas_cumprod()
    assert acp[0].item() == pytest.approx(0.99915, abs=1e-6) and acp[-1].item() == pytest.approx(0.0046601, rel=1e-4)


def test_zero_terminal_snr_equals_diffusers():
    betas = ddpm_betas()
    assert torch.equal(rescale_zero_terminal_snr(betas), diffusers_rescale(betas))
    acp = ddpm_alphas_cumprod(zero_terminal_snr=True)
    assert acp[-1].item() == 0.0  # pure noise at the last step
    assert acp[0].item() == pytest.approx(ddpm_alphas_cumprod()[0].item(), rel=1e-6)


def test_add_noise_and_velocity_equal_diffusers():
    sched = sd_scheduler()
    latents = torch.randn(3, 4, 8, 6, generator=gen(1))
    noise = torch.randn(3, 4, 8, 6, generator=gen(2))
    t = torch.tensor([0, 500, 999])
    acp = ddpm_alphas_cumprod()
    assert torch.equal(make_noisy_latents(latents, noise, t, acp), sched.add_noise(latents, noise, t))
    assert torch.equal(v_target(latents, noise, t, acp), sched.get_velocity(latents, noise, t))


# sd-scripts, torch.manual_seed(7), noise_offset=0.1, timesteps in [0, 1000)
SD_NOISE_OFFSET = [
    -0.8063172698020935, 0.40944844484329224, 0.9127257466316223, -1.374586582183838,
    -0.33521586656570435, 0.11693011224269867, -0.8093113899230957, -1.0618752241134644,
    0.9583108425140381, -0.50374436378479, -1.1279524564743042, -0.428389310836792,
    0.7218197584152222, 1.0260361433029175, 0.24367755651474, 1.1034458875656128,
]
SD_NOISY_OFFSET = [
    -0.6348804831504822, 0.323480486869812, 1.1554012298583984, -1.320047378540039,
    -0.6008049845695496, 0.32145777344703674, -0.7074781656265259, -0.8802987337112427,
    0.7623428106307983, -0.2263711541891098, -0.6089297533035278, -0.03378257155418396,
    0.24607005715370178, 0.5351966619491577, 0.03822121024131775, 0.7292717099189758,
]
# same, plus noise_offset_random_strength, adaptive_noise_scale=0.05, ip_noise_gamma=0.1 with random strength
SD_NOISE_ALL = [
    -0.9707133173942566, 0.24505238234996796, 0.7483296990394592, -1.538982629776001,
    -0.2458595633506775, 0.20628641545772552, -0.7199550867080688, -0.9725189805030823,
    0.8896664977073669, -0.5723887085914612, -1.1965968608856201, -0.49703365564346313,
    0.8102009296417236, 1.1144171953201294, 0.33205872774124146, 1.1918269395828247,
]
SD_NOISY_ALL = [
    -0.4163663387298584, 0.008676156401634216, 1.1687674522399902, -1.0905040502548218,
    -0.8720281720161438, 0.6659424901008606, -0.34034478664398193, -0.25388669967651367,
    0.8281015157699585, -0.3149057626724243, -0.7092630863189697, -0.08838862180709839,
    0.33963826298713684, 0.7792412042617798, 0.22925059497356415, 0.842269778251648,
]


def test_offset_noise_step_matches_sd_scripts():
    g = gen(7)
    noise = make_noise(LATENTS, g, noise_offset=0.1)
    t = sample_timesteps(2, 0, 1000, g)
    noisy = make_noisy_latents(LATENTS, noise, t, ddpm_alphas_cumprod(), g)
    assert noise.flatten().tolist() == float32_close(SD_NOISE_OFFSET)
    assert t.tolist() == [708, 368]
    assert noisy.flatten().tolist() == float32_close(SD_NOISY_OFFSET)


def test_all_noise_options_match_sd_scripts():
    g = gen(7)
    noise = make_noise(
        LATENTS, g, noise_offset=0.1, adaptive_noise_scale=0.05, noise_offset_random_strength=True
    )
    t = sample_timesteps(2, 0, 1000, g)
    noisy = make_noisy_latents(
        LATENTS, noise, t, ddpm_alphas_cumprod(), g, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True
    )
    assert noise.flatten().tolist() == float32_close(SD_NOISE_ALL)
    assert t.tolist() == [368, 443]
    assert noisy.flatten().tolist() == float32_close(SD_NOISY_ALL)


def test_offset_shifts_whole_channels():
    latents = torch.zeros(64, 4, 16, 16)
    plain = make_noise(latents, gen(0))
    offset = make_noise(latents, gen(0), noise_offset=0.5)
    shift = offset - plain
    # one constant per (sample, channel), std about 0.5
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)
    assert 0.4 < shift[:, :, 0, 0].std().item() < 0.6


def test_adaptive_offset_grows_with_the_channel_mean_and_never_goes_negative():
    bright = torch.full((1, 1, 4, 4), 2.0)
    a = make_noise(bright, gen(3), noise_offset=0.1, adaptive_noise_scale=0.5) - make_noise(bright, gen(3))
    b = make_noise(bright, gen(3), noise_offset=0.1) - make_noise(bright, gen(3))
    # same per-channel draw, offset 0.1 + 0.5 * |2.0| = 1.1 instead of 0.1
    assert torch.allclose(a, b * 11.0, atol=1e-6)
    c = make_noise(bright, gen(3), noise_offset=0.1, adaptive_noise_scale=-1.0) - make_noise(bright, gen(3))
    assert torch.count_nonzero(c) == 0  # 0.1 - 2.0 clamps to 0


def test_ip_noise_changes_the_input_only():
    g1, g2 = gen(5), gen(5)
    noise = torch.randn(LATENTS.shape, generator=gen(9))
    t = torch.tensor([500, 500])
    plain = make_noisy_latents(LATENTS, noise, t, ddpm_alphas_cumprod(), g1)
    perturbed = make_noisy_latents(LATENTS, noise, t, ddpm_alphas_cumprod(), g2, ip_noise_gamma=0.1)
    extra = torch.randn(LATENTS.shape, generator=gen(5))
    acp = ddpm_alphas_cumprod()[500]
    assert torch.allclose(perturbed - plain, math.sqrt(1 - acp) * 0.1 * extra, atol=1e-6)
    with pytest.raises(ValueError, match="generator"):
        make_noisy_latents(LATENTS, noise, t, ddpm_alphas_cumprod(), None, ip_noise_gamma=0.1)


# sd-scripts pyramid_noise_like(noise, iterations=3, discount=0.5) on torch.manual_seed(11) noise of
# shape (1, 1, 4, 4), with random.seed(3) giving the level ratios below
SD_PYRAMID_RATIOS = [2.4759292541837827, 3.0884584505919035, 2.7399103330961587]
SD_PYRAMID = [
    -0.036989081650972366, 1.4505325555801392, -0.9354039430618286, -0.6637158989906311,
    -0.07504180073738098, -1.2475930452346802, 0.8831998109817505, 0.18527334928512573,
    -0.23401229083538055, 0.1472856104373932, 1.9928326606750488, 0.10348740220069885,
    1.8288675546646118, -0.324496865272522, -1.271304726600647, 0.6806572675704956,
]


def test_pyramid_noise_matches_sd_scripts():
    g = gen(11)
    base = torch.randn((1, 1, 4, 4), generator=g)
    out = pyramid_noise_like(base, g, 3, 0.5, ratios=SD_PYRAMID_RATIOS)
    assert out.flatten().tolist() == float32_close(SD_PYRAMID)


def test_multires_noise_is_unit_std_and_spatially_correlated():
    latents = torch.zeros(4, 4, 64, 64)
    noise = make_noise(latents, gen(0), multires_iterations=6, multires_discount=0.8)
    assert noise.std().item() == pytest.approx(1.0, abs=1e-5)
    plain = make_noise(latents, gen(0))
    def neighbour_corr(x):
        return torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1].item()
    assert neighbour_corr(noise) > neighbour_corr(plain) + 0.2


def test_same_generator_state_same_noise():
    a = make_noise(LATENTS, gen(4), noise_offset=0.1, multires_iterations=3)
    b = make_noise(LATENTS, gen(4), noise_offset=0.1, multires_iterations=3)
    assert torch.equal(a, b)


def test_timesteps_stay_in_range():
    t = sample_timesteps(5000, 200, 300, gen(0))
    assert t.dtype == torch.int64 and t.min().item() == 200 and t.max().item() == 299
    with pytest.raises(ValueError, match="300 < 300"):
        sample_timesteps(1, 300, 300, gen(0))
