"""The training loop: one readable function from a validated config to LoRA files.

    setup (plan, model, latents, LoRA, optimizer; engine/setup.py)
    -> for each epoch, for each batch: loss (engine/step.py), backward, optimizer step
    -> save every N epochs / steps and at the end (engine/saving.py) -> RunResult

Every random draw of a step comes from generators derived from (seed, epoch, batch), so a run is
reproducible. The loss is read back from the device only every `LOSS_READ_EVERY` steps: a host
sync per step would stall the GPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from engine.config import TrainConfig
from engine.errors import TrainingError
from engine.events import Reporter, RunResult, StepStats, StopSignal
from engine.plan import epoch_batches

LOSS_READ_EVERY = 10


def train(cfg: TrainConfig, run_dir: Path, reporter: Reporter, stop: StopSignal | None = None) -> RunResult:
    """Train one config into `run_dir`. Bad input raises a LoraWizardError before the first step;
    a failure while training is a TrainingError whose message says what to change."""
    from engine.setup import prepare_session, quiet_heavy_imports

    quiet_heavy_imports()
    import torch

    stop = stop or StopSignal()
    started = time.monotonic()
    session = prepare_session(cfg, run_dir, reporter)
    plan, acc, opt = session.plan, session.accelerator, cfg.optim
    saving = cfg.saving
    files: list[Path] = list(session.extra_files)
    reporter.phase("training")
    reporter.started(plan.total_steps, plan.epochs)

    step, epoch, status = 0, 0, "done"
    loss_sum, loss_count, shown_loss = None, 0, None
    while step < plan.total_steps and status == "done":
        epoch += 1
        for index, batch in enumerate(_rank_share(epoch_batches(plan, cfg.training.seed, epoch, cfg.dataset.flip_aug), acc)):
            with acc.accumulate(session.network):
                loss = session.batch_loss(batch, epoch, index)
                acc.backward(loss)
                if acc.sync_gradients and opt.max_grad_norm > 0:
                    acc.clip_grad_norm_(session.trainable, opt.max_grad_norm)
                session.optimizer.step()
                session.scheduler.step()
                session.optimizer.zero_grad(set_to_none=True)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            loss_count += 1
            if not acc.sync_gradients:
                continue
            step += 1
            if step % LOSS_READ_EVERY == 0 or step == plan.total_steps or stop.requested:
                shown_loss = _read_loss(loss_sum, loss_count, step)
                loss_sum, loss_count = None, 0
            lr = session.scheduler.get_last_lr()[0]
            reporter.step(StepStats(step, plan.total_steps, epoch, plan.epochs, shown_loss, lr))
            if step >= plan.total_steps:
                break
            if saving.save_every_n_steps and step % saving.save_every_n_steps == 0:
                files += session.save(epoch, step, f"step{step:08d}")
            if stop.requested:
                status = "interrupted"
                break
        else:
            if saving.save_every_n_epochs and epoch % saving.save_every_n_epochs == 0 and step < plan.total_steps:
                files += session.save(epoch, step, f"{epoch:06d}")

    files += session.save(epoch, step, "interrupted" if status == "interrupted" else None)
    acc.wait_for_everyone()
    result = RunResult(run_dir, status, step, plan.total_steps, files, time.monotonic() - started)
    session.release()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _rank_share(batches: list, acc) -> list:
    """This process's batches: at each step every process trains on a different batch."""
    if acc.num_processes == 1:
        return batches
    return batches[acc.process_index :: acc.num_processes]


def _read_loss(loss_sum, count: int, step: int) -> float:
    value = float(loss_sum) / count
    if not math.isfinite(value):
        raise TrainingError(
            f"the loss became {value} at step {step}: lower optim.learning_rate (e.g. halve it), or use "
            "optim.mixed_precision=bf16 (or no) instead of fp16"
        )
    return value
