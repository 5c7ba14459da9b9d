"""Loss math against values produced by kohya-ss/sd-scripts.

Expected numbers were produced once by running sd-scripts' `conditional_loss`,
`get_huber_threshold_if_needed`, `apply_snr_weight`, `add_v_prediction_like_loss`,
`apply_debiased_estimation` in `NetworkTrainer.process_batch`'s order, on a DDPMScheduler prepared
by `prepare_scheduler_for_custom_training` (kohya-ss/sd-scripts, 2026
snapshot), and hard-coded here. A one-off script compared 448 combinations of loss type, Huber
schedule, min-SNR, v-prediction, v-pred scaling, v-pred-like loss, debiased estimation and zero
terminal SNR: every batch loss was bit-identical.
"""

import math

import pytest
import torch

from engine.config.schema import HuberSchedule, LossType
from engine.run.losses import (
    add_v_pred_like_loss,
    batch_loss_value,
    compute_snr,
    debiased_weight,
    huber_c_for_timesteps,
    min_snr_weight,
    per_sample_loss,
    v_prediction_scale,
    weighted_loss,
)
from engine.run.noise import ddpm_alphas_cumprod
from tests.support.numeric import float32_close

ACP = ddpm_alphas_cumprod()
SNR = compute_snr(ACP)
T = torch.tensor([0, 10, 500, 999])
WEIGHTS = torch.tensor([1.0, 0.5, 1.0, 0.5])  # a reg sample with prior_loss_weight 0.5 at 1 and 3


def batch():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 4, 8, 8, generator=g)
    target = torch.randn(4, 4, 8, 8, generator=g) * 1.5
    return pred, target


# (loss_type, huber schedule, min_snr_gamma, v_prediction, debiased, v_pred_like_loss) -> sd-scripts
SD_SCRIPTS_LOSSES = [
    (LossType.L2, HuberSchedule.SNR, None, False, False, None, 2.573772430419922),
    (LossType.L2, HuberSchedule.SNR, 5.0, False, False, None, 1.2184710502624512),
    (LossType.L2, HuberSchedule.SNR, 5.0, True, False, None, 0.2535651624202728),
    (LossType.HUBER, HuberSchedule.SNR, None, False, False, None, 0.8429399132728577),
    (LossType.SMOOTH_L1, HuberSchedule.EXPONENTIAL, None, False, False, None, 1.6213831901550293),
    (LossType.HUBER, HuberSchedule.CONSTANT, 5.0, False, True, None, 0.5680102109909058),
    (LossType.L2, HuberSchedule.SNR, None, False, False, 0.2, 19.53900146484375),
    (LossType.L2, HuberSchedule.SNR, None, True, True, None, 0.9700256586074829),
]


@pytest.mark.parametrize("loss_type,schedule,gamma,v_pred,debiased,v_like,expected", SD_SCRIPTS_LOSSES)
def test_batch_loss_matches_sd_scripts(loss_type, schedule, gamma, v_pred, debiased, v_like, expected):
    pred, target = batch()
    loss = batch_loss_value(
        pred, target, T, sample_weights=WEIGHTS, alphas_cumprod=ACP, loss_type=loss_type,
        huber_c=0.1, huber_schedule=schedule, min_snr_gamma=gamma, v_prediction=v_pred,
        v_pred_like_loss=v_like, debiased_estimation=debiased,
    )
    assert loss.item() == float32_close(expected)


def test_snr_values():
    # sd-scripts' all_snr at t = 0, 10, 500, 999
    assert SNR[T].tolist() == float32_close([1175.4405517578125, 103.50749969482422, 0.381850004196167, 0.004681912250816822])


def test_huber_thresholds_match_sd_scripts():
    # sd-scripts with huber_c=0.1, huber_scale=2.0 at t = 0, 10, 500, 999
    snr = huber_c_for_timesteps(T, HuberSchedule.SNR, 0.1, 2.0, ACP)
    assert snr.tolist() == float32_close([0.9497092366218567, 0.8461182117462158, 0.23128357529640198, 0.10369129478931427])
    exp = huber_c_for_timesteps(T, HuberSchedule.EXPONENTIAL, 0.1, 2.0)
    assert exp.tolist() == float32_close([2.0, 1.9544744491577148, 0.6324555277824402, 0.20046105980873108])
    const = huber_c_for_timesteps(T, HuberSchedule.CONSTANT, 0.1, 2.0)
    assert const.tolist() == [0.20000000298023224] * 4


def test_per_sample_loss_formulas():
    pred = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[3.0, 4.0]]], [[[0.0, 0.0]]]])
    assert per_sample_loss(pred, target, LossType.L2).tolist() == [12.5, 0.0]
    c = torch.tensor([1.0, 1.0])
    # 2c(sqrt(d^2 + c^2) - c): d=3 -> 2(sqrt(10) - 1), d=4 -> 2(sqrt(17) - 1)
    huber = per_sample_loss(pred, target, LossType.HUBER, c * 2)
    expected = (2 * 2 * (math.sqrt(9 + 4) - 2) + 2 * 2 * (math.sqrt(16 + 4) - 2)) / 2
    assert huber[0].item() == pytest.approx(expected, rel=1e-6)
    smooth = per_sample_loss(pred, target, LossType.SMOOTH_L1, c)
    assert smooth[0].item() == pytest.approx((2 * (math.sqrt(10) - 1) + 2 * (math.sqrt(17) - 1)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="huber_c"):
        per_sample_loss(pred, target, LossType.HUBER)


def test_huber_is_quadratic_near_zero_and_linear_far_away():
    c = torch.tensor([0.1])
    small = per_sample_loss(torch.tensor([[0.01]]), torch.zeros(1, 1), LossType.HUBER, c).item()
    large = per_sample_loss(torch.tensor([[100.0]]), torch.zeros(1, 1), LossType.HUBER, c).item()
    assert small == pytest.approx(0.01**2, rel=0.01)  # ~ d^2 when d << c
    assert large == pytest.approx(2 * 0.1 * 100, rel=0.01)  # ~ 2c|d| when d >> c


def test_min_snr_weight_and_its_v_prediction_form():
    t = torch.tensor([0, 500])
    snr = SNR[t]
    assert torch.equal(min_snr_weight(t, 5.0, SNR), torch.clamp(snr, max=5.0) / snr)
    assert torch.equal(min_snr_weight(t, 5.0, SNR, v_prediction=True), torch.clamp(snr, max=5.0) / (snr + 1))
    assert min_snr_weight(t, 5.0, SNR)[1].item() == 1.0  # low-SNR steps keep full weight


def test_v_scale_and_debiased_cap_the_snr_at_1000():
    t = torch.tensor([0])
    assert v_prediction_scale(t, SNR).item() == pytest.approx(1000 / 1001)
    assert debiased_weight(t, SNR).item() == pytest.approx(1 / math.sqrt(1000))
    assert debiased_weight(t, SNR, v_prediction=True).item() == pytest.approx(1 / 1001)


def test_v_pred_like_term_adds_loss_over_scale():
    t = torch.tensor([500])
    loss = torch.tensor([2.0])
    scale = SNR[500] / (SNR[500] + 1)
    assert add_v_pred_like_loss(loss, t, SNR, 0.1).item() == pytest.approx(2.0 + 2.0 / scale.item() * 0.1)


def test_weighted_loss_applies_the_prior_weight_per_sample():
    per_sample = torch.tensor([1.0, 1.0])
    t = torch.tensor([500, 500])
    assert weighted_loss(per_sample, t, torch.tensor([1.0, 0.0]), all_snr=SNR).item() == 0.5
    assert weighted_loss(per_sample, t, torch.tensor([1.0, 1.0]), all_snr=SNR).item() == 1.0


def test_zero_terminal_snr_needs_the_plain_snr_like_sd_scripts():
    ztsnr = ddpm_alphas_cumprod(zero_terminal_snr=True)
    pred, target = batch()
    kw = dict(sample_weights=WEIGHTS, alphas_cumprod=ztsnr, min_snr_gamma=5.0)
    assert torch.isnan(batch_loss_value(pred, target, T, **kw))  # snr 0 at t=999: 0/0
    assert torch.isfinite(batch_loss_value(pred, target, T, all_snr=SNR, **kw))
    # for v-prediction the rescaled SNR gives weight 0/(0+1) = 0 at t=999: finite, but not sd-scripts'
    v_kw = {**kw, "v_prediction": True}
    assert batch_loss_value(pred, target, T, **v_kw) != batch_loss_value(pred, target, T, all_snr=SNR, **v_kw)


def test_no_data_dependent_python_so_it_can_be_captured(monkeypatch):
    # a CUDA graph cannot hold a host sync: forbid every way a tensor value can reach Python
    def host_sync(*_args, **_kwargs):
        raise AssertionError("a tensor value was read on the host")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    pred, target = batch()
    for loss_type in LossType:
        for schedule in HuberSchedule:
            for v_pred in (False, True):
                loss = batch_loss_value(
                    pred, target, T, sample_weights=WEIGHTS, alphas_cumprod=ACP, loss_type=loss_type,
                    huber_schedule=schedule, min_snr_gamma=5.0, v_prediction=v_pred, v_pred_like_loss=0.1,
                    debiased_estimation=True, scale_v_pred_loss_like_noise_pred=True,
                )
                assert loss.shape == ()
