"""Defaults that follow other settings, and the usual range of a learning rate per optimizer.

A config's field defaults are fixed numbers; some are only right together with other settings: an
adaptive optimizer (Prodigy, DAdaptation) wants a learning rate of 1.0, Lion about a third of
AdamW's, an SDXL model 1024 pixels, and the bucket bounds scale with the resolution. The wizard
proposes these as answers are given, and the rulebook warns about a learning rate far outside the
optimizer's usual range. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.schema import MixedPrecision, ModelFamily, Optimizer

#: the learning rate of the config's default (AdamW-family) settings
ADAM_LR = 1e-4

# Prodigy and DAdaptation estimate the step size themselves; their authors (konstmish/prodigy,
# facebookresearch/dadaptation READMEs) say to leave lr at 1.0 and scale it only slightly.
ADAPTIVE = (Optimizer.PRODIGY, Optimizer.DADAPT_ADAM)
# Lion's update has the size of lr in every coordinate (sign of the momentum), so its authors
# (lucidrains/lion-pytorch README, after Chen et al. 2023) suggest an lr 3-10x smaller than AdamW's.
LION = (Optimizer.LION, Optimizer.LION8BIT)


@dataclass(frozen=True, slots=True)
class LrRange:
    low: float
    high: float

    def __contains__(self, lr: float) -> bool:
        return self.low <= lr <= self.high


#: outside these a run rarely learns anything useful: too small to move, or large enough to blow up
USUAL_LR: dict[Optimizer, LrRange] = {
    Optimizer.ADAMW: LrRange(1e-6, 1e-2),
    Optimizer.ADAMW8BIT: LrRange(1e-6, 1e-2),
    Optimizer.LION: LrRange(1e-7, 3e-3),
    Optimizer.LION8BIT: LrRange(1e-7, 3e-3),
    Optimizer.SGD_NESTEROV: LrRange(1e-4, 10.0),
    Optimizer.SGD_NESTEROV8BIT: LrRange(1e-4, 10.0),
    Optimizer.PRODIGY: LrRange(0.1, 10.0),
    Optimizer.DADAPT_ADAM: LrRange(0.1, 10.0),
    Optimizer.ADAFACTOR: LrRange(1e-6, 1e-2),
}


def suggested_learning_rate(optimizer: Optimizer) -> float:
    if optimizer in ADAPTIVE:
        return 1.0
    if optimizer in LION:
        return float(f"{ADAM_LR / 3:.3g}")  # 3.33e-05: a number a person would type
    return ADAM_LR


def suggested_resolution(family: ModelFamily) -> int:
    """SDXL was trained at 1024 pixels; SD1.x and SD2-base at 512 (SD2 768-v: see v-prediction)."""
    return 1024 if family == ModelFamily.SDXL else 512


# The LETS defaults, 320 and 960 buckets around 512 pixels, as ratios, so bounds keep the same
# shape at any resolution (1024 -> 640 and 1920).
MIN_BUCKET_RATIO, MAX_BUCKET_RATIO = 320 / 512, 960 / 512


def bucket_bounds(resolution: int | tuple[int, int], steps: int) -> tuple[int, int]:
    """(min_bucket_reso, max_bucket_reso) for a training resolution, multiples of `steps`."""
    side = resolution if isinstance(resolution, int) else max(resolution)
    low = max(steps, int(side * MIN_BUCKET_RATIO) // steps * steps)
    high = -(-int(side * MAX_BUCKET_RATIO) // steps) * steps
    return low, max(high, side)


def suggested_precision(cuda: bool, bf16: bool) -> MixedPrecision:
    """bf16 where the GPU has it (no loss scaling, no overflow), fp16 on older GPUs, none on a CPU."""
    if not cuda:
        return MixedPrecision.NO
    return MixedPrecision.BF16 if bf16 else MixedPrecision.FP16
