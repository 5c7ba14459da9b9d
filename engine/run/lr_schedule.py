"""Learning-rate schedules as pure multipliers of the base learning rate.

sd-scripts builds its schedulers with transformers' `get_scheduler` functions
(`train_util.get_scheduler_fix`); each formula here gives the same float for the same step:
linear and cosine decay to 0 after a linear warmup (cosine is half a wave, transformers'
default `num_cycles=0.5`), cosine_with_restarts restarts `num_cycles` times from the top ("hard"
restarts), polynomial decays to an absolute end LR of 1e-7, constant_with_warmup warms up then
holds. sd-scripts counts the scheduler's total as `max_train_steps x num_processes` (accelerate steps
the wrapped scheduler once per process) and turns a fractional warmup into `int(ratio x total)`.
The adafactor schedule is Adafactor's own relative step size: the optimizer computes its rate and
ignores the group's, so the multiplier is 1 and the scheduler only reports the rate (transformers'
`AdafactorSchedule`, which sd-scripts builds for `lr_scheduler = "adafactor"`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config.schema import LrScheduler

if TYPE_CHECKING:  # torch is imported where a scheduler is built: the plan (and the wizard's
    import torch  # dataset view, which uses it) must not pay for it

#: transformers' and diffusers' default end LR of the polynomial schedule (absolute, not a ratio)
POLYNOMIAL_LR_END = 1e-7


@dataclass(frozen=True)
class Schedule:
    """One schedule's settings; calling it with a step gives the LR multiplier.

    A plain dataclass (not a lambda) so `LambdaLR.state_dict()` saves it and a resume restores it.
    """

    kind: LrScheduler
    total_steps: int
    warmup_steps: int = 0
    num_cycles: int = 1
    power: float = 1.0
    #: the optimizer's base LR; only the polynomial schedule needs it (its end LR is absolute)
    initial_lr: float | None = None
    #: where the polynomial schedule ends (absolute LR); optim.lr_scheduler_args {"lr_end": ...}
    lr_end: float = POLYNOMIAL_LR_END

    def __post_init__(self) -> None:
        if self.kind == LrScheduler.CONSTANT and self.warmup_steps:
            raise ValueError(
                f"the constant schedule has no warmup (got {self.warmup_steps} warmup steps): "
                "use constant_with_warmup"
            )
        if self.kind == LrScheduler.POLYNOMIAL:
            if self.initial_lr is None:
                raise ValueError("the polynomial schedule needs initial_lr (its end LR is 1e-7 absolute)")
            if not self.initial_lr > self.lr_end:
                raise ValueError(
                    f"the polynomial schedule decays to {self.lr_end}: the learning rate "
                    f"({self.initial_lr}) must be larger"
                )

    def __call__(self, step: int) -> float:
        if self.kind != LrScheduler.CONSTANT and step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        return SCHEDULES[self.kind](self, step)

    def progress(self, step: int) -> float:
        """Share of the post-warmup steps done, 0 at the end of warmup, 1 at total_steps."""
        return float(step - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps))


def _constant(s: Schedule, step: int) -> float:
    return 1.0  # also the adafactor schedule's: Adafactor sets its own step size


def _linear(s: Schedule, step: int) -> float:
    return max(0.0, float(s.total_steps - step) / float(max(1, s.total_steps - s.warmup_steps)))


def _cosine(s: Schedule, step: int) -> float:
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * s.progress(step))))


def _cosine_with_restarts(s: Schedule, step: int) -> float:
    progress = s.progress(step)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(s.num_cycles) * progress) % 1.0))))


def _polynomial(s: Schedule, step: int) -> float:
    lr_init = s.initial_lr
    assert lr_init is not None  # checked in __post_init__
    if step > s.total_steps:
        return s.lr_end / lr_init
    remaining = 1 - (step - s.warmup_steps) / (s.total_steps - s.warmup_steps)
    return ((lr_init - s.lr_end) * remaining**s.power + s.lr_end) / lr_init


SCHEDULES: dict[LrScheduler, Callable[[Schedule, int], float]] = {
    LrScheduler.LINEAR: _linear,
    LrScheduler.COSINE: _cosine,
    LrScheduler.COSINE_WITH_RESTARTS: _cosine_with_restarts,
    LrScheduler.POLYNOMIAL: _polynomial,
    LrScheduler.CONSTANT: _constant,
    LrScheduler.CONSTANT_WITH_WARMUP: _constant,
    LrScheduler.ADAFACTOR: _constant,
}


def lr_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    scheduler: LrScheduler,
    num_cycles: int = 1,
    power: float = 1.0,
    *,
    initial_lr: float | None = None,
) -> float:
    """The factor applied to the base LR at `step` (0-based, the number of scheduler steps taken)."""
    return Schedule(scheduler, total_steps, warmup_steps, num_cycles, power, initial_lr)(step)


def make_lambda_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: LrScheduler,
    total_steps: int,
    warmup_steps: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
    extra: dict | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying the schedule to every parameter group.

    The polynomial end LR is taken relative to the optimizer's constructor LR (`defaults["lr"]`),
    as transformers does, so groups with their own LR (UNet / text encoder) decay by the same factor.
    """
    import torch

    if scheduler == LrScheduler.ADAFACTOR:
        from transformers.optimization import AdafactorSchedule

        # reports Adafactor's step size after each step (the configured rate before the first one)
        return AdafactorSchedule(optimizer, optimizer.defaults.get("initial_lr") or 0.0)
    schedule = Schedule(
        scheduler, total_steps, warmup_steps, num_cycles, power, initial_lr=optimizer.defaults.get("lr"), **(extra or {})
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
