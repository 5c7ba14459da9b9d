"""Training loss: per-sample loss, robust-loss thresholds and timestep weightings.

Each piece reproduces kohya-ss/sd-scripts: `conditional_loss` and `get_huber_threshold_if_needed`
(library/train_util.py), `apply_snr_weight`, `scale_v_prediction_loss_like_noise_prediction`,
`add_v_prediction_like_loss`, `apply_debiased_estimation` (library/custom_train_functions.py), and
the order of `NetworkTrainer.process_batch` (train_network.py):

    elementwise loss -> mean over C,H,W -> x per-sample weight (prior_loss_weight for reg images)
    -> min-SNR -> v-pred scaling -> v-pred-like term -> debiased estimation -> batch mean

Everything is tensor math indexed by the timestep tensor, with no `.item()` and no Python branch
on tensor values, so it can run inside a captured CUDA graph. Python branches are on settings only.
"""

from __future__ import annotations

import math

import torch

from engine.config.schema import HuberSchedule, LossType

#: sd-scripts' --huber_c / --huber_scale defaults
DEFAULT_HUBER_C = 0.1
DEFAULT_HUBER_SCALE = 1.0
#: the SNR at t=0 is about 1175; sd-scripts caps it here for the v-pred scale and debiased weight
SNR_CAP = 1000.0


def compute_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio per timestep, (sqrt(acp) / sqrt(1 - acp))**2, computed as sd-scripts
    does (the float32 result differs in the last bit from acp / (1 - acp)).

    sd-scripts builds it from the schedule *before* a zero-terminal-SNR rescale; pass the plain
    schedule's alphas_cumprod to match it."""
    return (alphas_cumprod.sqrt() / (1.0 - alphas_cumprod).sqrt()) ** 2


def per_sample_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    loss_type: LossType,
    huber_c: torch.Tensor | None = None,
) -> torch.Tensor:
    """(b,) loss: the elementwise loss in float32, averaged over every non-batch dimension.

    l2: (pred - target)^2. huber: 2c(sqrt(d^2 + c^2) - c). smooth_l1: 2(sqrt(d^2 + c^2) - c).
    `huber_c` is one threshold per sample (see `huber_c_for_timesteps`).
    """
    pred, target = pred.float(), target.float()
    if loss_type == LossType.L2:
        elementwise = (pred - target) ** 2
    else:
        if huber_c is None:
            raise ValueError(f"loss_type={loss_type} needs huber_c (one value per sample)")
        c = huber_c.float().view(-1, *([1] * (pred.ndim - 1)))
        root = torch.sqrt((pred - target) ** 2 + c**2) - c
        elementwise = 2 * c * root if loss_type == LossType.HUBER else 2 * root
    return elementwise.mean(dim=list(range(1, elementwise.ndim)))


def huber_c_for_timesteps(
    timesteps: torch.Tensor,
    schedule: HuberSchedule,
    huber_c: float = DEFAULT_HUBER_C,
    huber_scale: float = DEFAULT_HUBER_SCALE,
    alphas_cumprod: torch.Tensor | None = None,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """(b,) Huber threshold per sample (Khrapov et al., https://arxiv.org/abs/2403.16728).

    constant: c * scale. exponential: exp(-a t) * scale with a = -ln(c) / T, i.e. 1 at t=0 falling
    to c at t=T. snr: (1 - c) / (1 + sigma_t)^2 + c with sigma_t = sqrt((1 - acp_t) / acp_t); like
    sd-scripts, this one ignores `huber_scale`.
    """
    if schedule == HuberSchedule.CONSTANT:
        return torch.full(timesteps.shape, huber_c * huber_scale, device=timesteps.device)
    if schedule == HuberSchedule.EXPONENTIAL:
        alpha = -math.log(huber_c) / num_train_timesteps
        return torch.exp(-alpha * timesteps) * huber_scale
    if alphas_cumprod is None:
        raise ValueError("the snr Huber schedule needs alphas_cumprod")
    acp = alphas_cumprod.to(timesteps.device)[timesteps]
    sigmas = ((1.0 - acp) / acp) ** 0.5
    return (1 - huber_c) / (1 + sigmas) ** 2 + huber_c


def _snr_at(timesteps: torch.Tensor, all_snr: torch.Tensor) -> torch.Tensor:
    return all_snr.to(timesteps.device)[timesteps]


def min_snr_weight(
    timesteps: torch.Tensor, gamma: float, all_snr: torch.Tensor, v_prediction: bool = False
) -> torch.Tensor:
    """Min-SNR-gamma weight min(snr, gamma) / snr, or / (snr + 1) for v-prediction
    (Hang et al., https://arxiv.org/abs/2303.09556)."""
    snr = _snr_at(timesteps, all_snr)
    clipped = torch.clamp(snr, max=gamma)
    return (clipped / (snr + 1 if v_prediction else snr)).float()


def v_prediction_scale(timesteps: torch.Tensor, all_snr: torch.Tensor) -> torch.Tensor:
    """snr / (snr + 1) with snr capped at 1000: scales a v-prediction loss to an epsilon loss's size."""
    snr = torch.clamp(_snr_at(timesteps, all_snr), max=SNR_CAP)
    return snr / (snr + 1)


def add_v_pred_like_loss(
    loss: torch.Tensor, timesteps: torch.Tensor, all_snr: torch.Tensor, amount: float
) -> torch.Tensor:
    """loss + loss / scale * amount: adds a v-prediction-like term to an epsilon model's loss."""
    return loss + loss / v_prediction_scale(timesteps, all_snr) * amount


def debiased_weight(timesteps: torch.Tensor, all_snr: torch.Tensor, v_prediction: bool = False) -> torch.Tensor:
    """1 / sqrt(snr), or 1 / (snr + 1) for v-prediction, snr capped at 1000
    (debiased estimation, Yu et al., https://arxiv.org/abs/2310.08442)."""
    snr = torch.clamp(_snr_at(timesteps, all_snr), max=SNR_CAP)
    return 1 / (snr + 1) if v_prediction else 1 / torch.sqrt(snr)


def weighted_loss(
    per_sample: torch.Tensor,
    timesteps: torch.Tensor,
    sample_weights: torch.Tensor,
    *,
    all_snr: torch.Tensor,
    min_snr_gamma: float | None = None,
    v_prediction: bool = False,
    scale_v_pred_loss_like_noise_pred: bool = False,
    v_pred_like_loss: float | None = None,
    debiased_estimation: bool = False,
) -> torch.Tensor:
    """Scalar batch loss from per-sample losses, with the weightings in sd-scripts' order."""
    loss = per_sample * sample_weights
    if min_snr_gamma:
        loss = loss * min_snr_weight(timesteps, min_snr_gamma, all_snr, v_prediction)
    if scale_v_pred_loss_like_noise_pred:
        loss = loss * v_prediction_scale(timesteps, all_snr)
    if v_pred_like_loss:
        loss = add_v_pred_like_loss(loss, timesteps, all_snr, v_pred_like_loss)
    if debiased_estimation:
        loss = loss * debiased_weight(timesteps, all_snr, v_prediction)
    return loss.mean()


def batch_loss_value(
    pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    sample_weights: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    loss_type: LossType = LossType.L2,
    huber_c: float | None = None,
    huber_schedule: HuberSchedule = HuberSchedule.SNR,
    huber_scale: float = DEFAULT_HUBER_SCALE,
    min_snr_gamma: float | None = None,
    v_prediction: bool = False,
    scale_v_pred_loss_like_noise_pred: bool = False,
    v_pred_like_loss: float | None = None,
    debiased_estimation: bool = False,
    all_snr: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole loss of one batch: `per_sample_loss` (with its Huber threshold) + `weighted_loss`.

    `alphas_cumprod` is the training schedule (it drives the snr Huber schedule). `all_snr`
    defaults to `compute_snr(alphas_cumprod)`; with zero terminal SNR pass the SNR of the plain
    schedule instead, as sd-scripts does (the rescaled one is 0 at the last step, which makes the
    epsilon min-SNR weight 0/0 = NaN and the v-prediction one 0).
    """
    c = None
    if loss_type != LossType.L2:
        c = huber_c_for_timesteps(
            timesteps, huber_schedule, huber_c if huber_c is not None else DEFAULT_HUBER_C, huber_scale, alphas_cumprod
        )
    per_sample = per_sample_loss(pred, target, loss_type, c)
    return weighted_loss(
        per_sample,
        timesteps,
        sample_weights,
        all_snr=compute_snr(alphas_cumprod) if all_snr is None else all_snr,
        min_snr_gamma=min_snr_gamma,
        v_prediction=v_prediction,
        scale_v_pred_loss_like_noise_pred=scale_v_pred_loss_like_noise_pred,
        v_pred_like_loss=v_pred_like_loss,
        debiased_estimation=debiased_estimation,
    )
