"""LR schedules against diffusers' and transformers' schedulers, step by step.

sd-scripts builds its schedulers with transformers' functions; diffusers' copies have the same
formulas. Importing transformers.optimization takes several seconds here (it pulls in peft), so the
step-by-step comparison is against diffusers, and transformers' values for one run per schedule
(produced once with transformers 5.24's `get_scheduler`, same settings) are hard-coded below.
"""

import math

import pytest
import torch
from diffusers.optimization import get_scheduler as diffusers_get_scheduler

from engine.config.schema import LrScheduler
from engine.data.plan import warmup_steps_from_ratio
from engine.run.lr_schedule import (
    SCHEDULES,
    Schedule,
    lr_multiplier,
    make_lambda_scheduler,
)

TOTAL, WARMUP = 40, 6


def two_group_optimizer():
    # the optimizer's own lr (1e-4) plus a text-encoder group with its own lr, as the trainer builds it
    unet, te = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [unet]}, {"params": [te], "lr": 5e-5}], lr=1e-4)


def lrs_over_run(scheduler, steps=TOTAL + 3):
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return seen


# the adafactor schedule is Adafactor's own step size, not a multiplier (tested at the end)
MULTIPLIERS = [kind for kind in LrScheduler if kind != LrScheduler.ADAFACTOR]


@pytest.mark.parametrize("kind", MULTIPLIERS)
def test_every_schedule_equals_diffusers(kind):
    warmup = 0 if kind == LrScheduler.CONSTANT else WARMUP
    ours = make_lambda_scheduler(
        two_group_optimizer(), scheduler=kind, total_steps=TOTAL, warmup_steps=warmup, num_cycles=3, power=2.0
    )
    kw = dict(num_warmup_steps=warmup, num_training_steps=TOTAL, num_cycles=3, power=2.0)
    if kind == LrScheduler.CONSTANT:
        kw = {}
    theirs = diffusers_get_scheduler(kind.value, two_group_optimizer(), **kw)
    assert lrs_over_run(ours) == lrs_over_run(theirs)


# transformers 5.24 get_scheduler(kind, optimizer lr=1e-4, 6 warmup of 40 steps, num_cycles=3,
# power=2.0): the first group's lr at these steps (one-off script; all 43 steps of both groups
# were also compared and were identical)
STEPS = [0, 3, 6, 10, 17, 23, 30, 39, 40, 42]
TRANSFORMERS_LRS = {
    LrScheduler.LINEAR: [0.0, 5e-05, 0.0001, 8.823529411764706e-05, 6.764705882352942e-05, 5e-05, 2.9411764705882354e-05, 2.9411764705882355e-06, 0.0, 0.0],
    LrScheduler.COSINE: [0.0, 5e-05, 0.0001, 9.662361147021779e-05, 7.63216081438678e-05, 5e-05, 1.9868268181037185e-05, 2.1329118524827662e-07, 0.0, 8.513450158049108e-07],
    LrScheduler.COSINE_WITH_RESTARTS: [0.0, 5e-05, 0.0001, 7.228691778882693e-05, 2.1329118524827108e-07, 5e-05, 9.662361147021779e-05, 1.9087178413590533e-06, 0.0, 0.0],
    LrScheduler.POLYNOMIAL: [0.0, 5e-05, 0.0001, 7.787681660899654e-05, 4.581548442906576e-05, 2.5075e-05, 8.741868512110725e-06, 1.8641868512110728e-07, 9.999999999999998e-08, 9.999999999999998e-08],
    LrScheduler.CONSTANT: [0.0001] * 10,
    LrScheduler.CONSTANT_WITH_WARMUP: [0.0, 5e-05, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001],
}


@pytest.mark.parametrize("kind", MULTIPLIERS)
def test_every_schedule_equals_transformers_values(kind):
    warmup = 0 if kind == LrScheduler.CONSTANT else WARMUP
    ours = make_lambda_scheduler(
        two_group_optimizer(), scheduler=kind, total_steps=TOTAL, warmup_steps=warmup, num_cycles=3, power=2.0
    )
    lrs = lrs_over_run(ours)
    assert [lrs[s][0] for s in STEPS] == TRANSFORMERS_LRS[kind]
    # the text-encoder group (own lr 5e-5) gets the same factor
    assert [lrs[s][1] for s in STEPS] == pytest.approx([lr / 2 for lr in TRANSFORMERS_LRS[kind]], rel=1e-14)


def test_registry_covers_every_scheduler():
    assert set(SCHEDULES) == set(LrScheduler)


def test_warmup_then_shapes():
    # linear warmup over 10 steps, then each shape over the remaining 90
    assert lr_multiplier(0, 100, 10, LrScheduler.LINEAR) == 0.0
    assert lr_multiplier(5, 100, 10, LrScheduler.LINEAR) == 0.5
    assert lr_multiplier(10, 100, 10, LrScheduler.LINEAR) == 1.0
    assert lr_multiplier(55, 100, 10, LrScheduler.LINEAR) == 0.5
    assert lr_multiplier(100, 100, 10, LrScheduler.LINEAR) == 0.0
    assert lr_multiplier(55, 100, 10, LrScheduler.COSINE) == pytest.approx(0.5)
    assert lr_multiplier(10, 100, 10, LrScheduler.CONSTANT_WITH_WARMUP) == 1.0
    assert lr_multiplier(99, 100, 10, LrScheduler.CONSTANT_WITH_WARMUP) == 1.0
    assert lr_multiplier(50, 100, 0, LrScheduler.CONSTANT) == 1.0


def test_cosine_with_restarts_jumps_back_to_the_top():
    # 2 cycles over 100 steps: the LR is back at 1.0 at step 50, near 0 just before it
    assert lr_multiplier(0, 100, 0, LrScheduler.COSINE_WITH_RESTARTS, num_cycles=2) == 1.0
    assert lr_multiplier(49, 100, 0, LrScheduler.COSINE_WITH_RESTARTS, num_cycles=2) < 0.01
    assert lr_multiplier(50, 100, 0, LrScheduler.COSINE_WITH_RESTARTS, num_cycles=2) == 1.0
    assert lr_multiplier(25, 100, 0, LrScheduler.COSINE_WITH_RESTARTS, num_cycles=2) == pytest.approx(0.5)
    assert lr_multiplier(100, 100, 0, LrScheduler.COSINE_WITH_RESTARTS, num_cycles=2) == 0.0


def test_polynomial_ends_at_an_absolute_1e_7():
    lr = 1e-4
    end = lr_multiplier(100, 100, 0, LrScheduler.POLYNOMIAL, power=2.0, initial_lr=lr)
    assert end * lr == pytest.approx(1e-7)
    half = lr_multiplier(50, 100, 0, LrScheduler.POLYNOMIAL, power=2.0, initial_lr=lr)
    assert half == pytest.approx(((lr - 1e-7) * 0.25 + 1e-7) / lr)
    assert lr_multiplier(150, 100, 0, LrScheduler.POLYNOMIAL, initial_lr=lr) * lr == pytest.approx(1e-7)
    with pytest.raises(ValueError, match="initial_lr"):
        lr_multiplier(5, 100, 0, LrScheduler.POLYNOMIAL)
    with pytest.raises(ValueError, match="must be larger"):
        lr_multiplier(5, 100, 0, LrScheduler.POLYNOMIAL, initial_lr=1e-8)


def test_constant_refuses_a_warmup_like_sd_scripts():
    with pytest.raises(ValueError, match="constant_with_warmup"):
        lr_multiplier(0, 100, 5, LrScheduler.CONSTANT)


def test_warmup_steps_from_ratio_rounds_down():
    assert warmup_steps_from_ratio(0.1, 1000) == 100
    assert warmup_steps_from_ratio(0.05, 333) == 16  # 16.65
    assert warmup_steps_from_ratio(0.0, 50) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        warmup_steps_from_ratio(1.5, 10)


def test_state_dict_round_trip_resumes_the_schedule():
    first = make_lambda_scheduler(
        two_group_optimizer(), scheduler=LrScheduler.COSINE_WITH_RESTARTS, total_steps=TOTAL, warmup_steps=WARMUP, num_cycles=2
    )
    lrs_over_run(first, steps=15)
    state = first.state_dict()
    assert state["lr_lambdas"][0]["num_cycles"] == 2  # the schedule itself is saved, not dropped
    resumed = make_lambda_scheduler(
        two_group_optimizer(), scheduler=LrScheduler.COSINE_WITH_RESTARTS, total_steps=TOTAL, warmup_steps=WARMUP, num_cycles=2
    )
    resumed.load_state_dict(state)
    for group, lr in zip(resumed.optimizer.param_groups, first.optimizer.param_groups):
        group["lr"] = lr["lr"]
    assert lrs_over_run(resumed, steps=10) == lrs_over_run(first, steps=10)


def test_schedule_is_a_plain_callable():
    schedule = Schedule(LrScheduler.LINEAR, total_steps=10, warmup_steps=2)
    assert [schedule(s) for s in range(0, 11, 2)] == [0.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert math.isclose(schedule(3), 7 / 8)


def test_polynomial_lr_end_from_scheduler_args():
    import torch

    from engine.config.rules import check
    from engine.config.schema import TrainConfig

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    sched = make_lambda_scheduler(
        optimizer, scheduler=LrScheduler.POLYNOMIAL, total_steps=10, power=1.0, extra={"lr_end": 1e-4}
    )
    for _ in range(10):
        optimizer.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1e-4)
    # only the arguments a schedule takes are accepted, with the fix in the message
    def problems(optim):
        return " ".join(map(str, check(TrainConfig.model_validate({"optim": optim}))))

    assert "takes lr_end" in problems({"lr_scheduler": "polynomial", "lr_scheduler_args": {"power_x": 2}})
    assert "takes no extra arguments" in problems({"lr_scheduler_args": {"lr_end": 1e-6}})


def test_the_adafactor_schedule_reports_adafactors_own_step_size():
    """sd-scripts' "adafactor" scheduler: Adafactor with relative_step sets its own rate (transformers'
    `_get_lr`: min(1e-2, 1/sqrt(step)) without parameter scaling); the schedule only reports it."""
    from engine.config.schema import Optimizer
    from engine.run.optim import build_optimizer

    weight = torch.nn.Parameter(torch.ones(4, 4))
    groups = [{"params": [weight], "lr": 1e-3, "name": "unet"}]
    args = {"relative_step": "True", "scale_parameter": "False"}
    optimizer = build_optimizer(Optimizer.ADAFACTOR, groups, args, lr=1.0)
    scheduler = make_lambda_scheduler(optimizer, scheduler=LrScheduler.ADAFACTOR, total_steps=10)
    assert scheduler.get_last_lr() == [1.0]  # the configured rate, before the first step
    for step in range(1, 4):
        (weight**2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        assert scheduler.get_last_lr() == [pytest.approx(min(1e-2, 1 / step**0.5))]
    assert lr_multiplier(5, 10, 0, LrScheduler.ADAFACTOR) == 1.0
