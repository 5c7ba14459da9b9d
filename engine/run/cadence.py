"""When things happen during a run: the loss is read back, LoRA files are saved, the text encoder
stops training. Named predicates shared by the loop (engine/run/train.py), preflight's count of the
files a run writes (engine/queue/preflight.py) and the benchmark (bench/measure.py), so the three
cannot disagree. (When to sample is sd-scripts' own rule: engine/run/prompts.py `should_sample`.)
"""

from __future__ import annotations

import math

from engine.config.schema import SavingConfig, TrainingConfig

#: the loss is read from the device every this many optimizer steps: a read is a host sync, which
#: stalls the GPU, so it is not made at every step
LOSS_READ_EVERY = 10


def loss_read_due(step: int, total_steps: int, *, epoch_end: bool, stopping: bool) -> bool:
    """At the first step (so the progress bar shows a loss from the start, and the summary the
    loss the run started from), every LOSS_READ_EVERY steps, and at the last step, an epoch's end
    (so loss/epoch_average is exact) or a stop (so the interrupted run's last loss is shown)."""
    return step == 1 or step % LOSS_READ_EVERY == 0 or step == total_steps or epoch_end or stopping


def step_save_due(saving: SavingConfig, step: int, total_steps: int) -> bool:
    """Every saving.save_every_n_steps optimizer steps, but not at the last step: the final save
    is that file."""
    every = saving.save_every_n_steps
    return bool(every) and step % every == 0 and step < total_steps


def epoch_save_due(saving: SavingConfig, epoch: int, step: int, total_steps: int) -> bool:
    """At the end of every saving.save_every_n_epochs-th epoch, but not when the run ends there."""
    every = saving.save_every_n_epochs
    return bool(every) and epoch % every == 0 and step < total_steps


def text_encoder_stop_step(training: TrainingConfig, total_steps: int) -> int | None:
    """The step from which the text encoder's LoRA stops learning (training.stop_text_encoder_training,
    a percentage of the steps), or None."""
    percent = training.stop_text_encoder_training
    return math.ceil(total_steps * percent / 100) if percent else None


def planned_saves(saving: SavingConfig, epochs: int, steps_per_epoch: int, total_steps: int) -> int:
    """LoRA files a run writes if it is not stopped: the final one, and the epoch and step saves
    the predicates above call for."""
    epoch_saves = sum(epoch_save_due(saving, e, min(e * steps_per_epoch, total_steps), total_steps) for e in range(1, epochs + 1))
    step_saves = sum(step_save_due(saving, s, total_steps) for s in range(1, total_steps + 1)) if saving.save_every_n_steps else 0
    return 1 + epoch_saves + step_saves
