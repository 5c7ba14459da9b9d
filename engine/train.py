"""The training loop: one readable function from a validated config to LoRA files.

    setup (plan, model, latents, LoRA, optimizer; engine/setup.py)
    -> for each epoch, for each batch: loss (engine/step.py), backward, optimizer step
    -> save every N epochs / steps and at the end (engine/saving.py), states for exact resume
    -> RunResult

Every random draw of a step comes from generators derived from (seed, epoch, batch), so a run is
reproducible, and a resumed run continues exactly: it skips the batches already trained and
draws what the uninterrupted run would have drawn. The loss is read back from the device only
every `LOSS_READ_EVERY` steps: a host sync per step would stall the GPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from engine.config import TrainConfig
from engine.errors import TrainingError
from engine.events import Reporter, RunResult, StepStats, StopSignal
from engine.plan import epoch_batches
from engine.train_state import Position, prune_states, save_state, state_dir_name

LOSS_READ_EVERY = 10


def train(cfg: TrainConfig, run_dir: Path, reporter: Reporter, stop: StopSignal | None = None) -> RunResult:
    """Train one config into `run_dir`. Bad input raises a LoraWizardError before the first step;
    a failure while training is a TrainingError whose message says what to change."""
    from engine.setup import quiet_heavy_imports

    quiet_heavy_imports()
    import torch

    threads = torch.get_num_threads()
    try:
        return _train(cfg, run_dir, reporter, stop)
    finally:
        if torch.get_num_threads() != threads:  # a CPU run computes on one thread (setup.use_one_cpu_thread)
            torch.set_num_threads(threads)


def _train(cfg: TrainConfig, run_dir: Path, reporter: Reporter, stop: StopSignal | None) -> RunResult:
    from engine.setup import StoppedDuringSetup, prepare_session

    import torch

    stop = stop or StopSignal()
    started = time.monotonic()
    try:
        session = prepare_session(cfg, run_dir, reporter, stop)
    except StoppedDuringSetup:
        return RunResult(run_dir, "interrupted", 0, 0, [], time.monotonic() - started, "stopped before the first step")
    if stop.requested:
        session.release()
        return RunResult(run_dir, "interrupted", 0, session.plan.total_steps, [], time.monotonic() - started, "stopped before the first step")
    try:
        return _run(session, run_dir, reporter, stop, started)
    finally:
        session.release()  # also after a failure: the next run of a queue needs the memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _run(session, run_dir: Path, reporter: Reporter, stop: StopSignal, started: float) -> RunResult:
    from engine.sampling import should_sample
    from engine.tracking import learning_rates

    cfg = session.cfg  # dims may come from network.network_weights
    plan, acc, saving = session.plan, session.accelerator, cfg.saving
    saver = Saver(session, run_dir)
    files: list[Path] = list(session.extra_files)
    reporter.phase("training")
    reporter.started(plan.total_steps, plan.epochs)

    start = session.start
    step = start.step if start else 0
    epoch = (start.epoch if start else 1) - 1
    skip = start.batches_done if start else 0
    status, batches, ended_epoch = "done", [], 0
    loss_sum, loss_count, shown_loss = None, 0, None
    while step < plan.total_steps and status == "done":
        epoch += 1
        batches = epoch_batches(plan, cfg.training.seed, epoch, cfg.dataset.flip_aug)  # each process takes its rows
        for index, batch in enumerate(batches):
            if index < skip:
                continue  # trained before the resume
            loss, norms = training_step(session, batch, epoch, index)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            loss_count += 1
            if not acc.sync_gradients:
                continue
            step += 1
            here = Position(epoch, index + 1, step, cfg.training.seed, acc.num_processes, plan.total_steps)
            fresh_loss = None
            epoch_last = index == len(batches) - 1  # one more read per epoch keeps loss/epoch_average exact
            if step % LOSS_READ_EVERY == 0 or step == plan.total_steps or stop.requested or epoch_last:
                shown_loss = fresh_loss = _read_loss(loss_sum, loss_count, step)
                loss_sum, loss_count = None, 0
            session.train_log.step(step, fresh_loss, learning_rates(session.optimizer))
            if norms is not None:
                scaled, mean_norm, max_norm = norms
                session.train_log.scalars(
                    step, {"max_norm/keys_scaled": scaled, "max_norm/average_key_norm": mean_norm, "max_norm/max_key_norm": max_norm}
                )
            reporter.step(StepStats(step, plan.total_steps, epoch, plan.epochs, shown_loss, session.scheduler.get_last_lr()[0]))
            session.maybe_stop_text_encoder(step)
            if should_sample(cfg.sampling, epoch, step, epoch_end=False):
                session.sample(epoch, step, epoch_end=False)
            if step >= plan.total_steps:
                break
            stop_now, state_now = session.agree(step, stop.requested, saver.state_due())
            if saving.save_every_n_steps and step % saving.save_every_n_steps == 0:
                files += saver.save(epoch, step, f"step{step:08d}", here, kind="step")
            elif state_now:
                files += saver.save_state_only(f"step{step:08d}", here)
            if stop_now:
                status = "interrupted"
                break
        else:
            _end_epoch(session, epoch, step)
            ended_epoch = epoch
            after_epoch = Position(epoch + 1, 0, step, cfg.training.seed, acc.num_processes, plan.total_steps)
            if saving.save_every_n_epochs and epoch % saving.save_every_n_epochs == 0 and step < plan.total_steps:
                files += saver.save(epoch, step, f"{epoch:06d}", after_epoch, kind="epoch")
        skip = 0

    if status == "done" and ended_epoch != epoch:
        _end_epoch(session, epoch, step)  # the last epoch, cut off by the step count
    final = Position(epoch, len(batches), step, cfg.training.seed, acc.num_processes, plan.total_steps)
    if status == "interrupted":
        final = here
    files += saver.save(epoch, step, "interrupted" if status == "interrupted" else None, final, kind=None)
    acc.wait_for_everyone()
    files = [f for f in files if f not in saver.removed]
    return RunResult(run_dir, status, step, plan.total_steps, files, time.monotonic() - started)


def training_step(session, batch, epoch: int, index: int):
    """One micro-batch: loss, backward and, at an accumulation boundary, the gradient average over
    processes, clipping, the optimizer and schedule steps and max-norm. Returns the (device) loss
    and the max-norm numbers when they were applied. The benchmark times exactly this."""
    acc, opt = session.accelerator, session.cfg.optim
    norms = None
    with acc.accumulate(session.network):
        loss = session.batch_loss(batch, epoch, index)
        acc.backward(loss)
        if acc.sync_gradients:
            session.average_gradients()
        if acc.sync_gradients and opt.max_grad_norm > 0:
            acc.clip_grad_norm_(session.trainable, opt.max_grad_norm)
        session.optimizer.step()  # accelerate skips it between accumulation boundaries
        if acc.sync_gradients:
            session.scheduler.step()  # one schedule step per optimizer step
        session.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients and opt.scale_weight_norms:
            from engine.network.max_norm import apply_max_norm

            norms = apply_max_norm(acc.unwrap_model(session.network), opt.scale_weight_norms, acc.device)
    return loss, norms


class Saver:
    """LoRA files and (with saving.save_state) training states, on the main process only."""

    def __init__(self, session, run_dir: Path) -> None:
        self.session = session
        self.run_dir = run_dir
        self.cfg = session.cfg
        self.base = self.cfg.saving.output_name or "last"
        self.last_state_time = time.monotonic()
        self.removed: set[Path] = set()  # saves pruned by keep-last-N

    def save(self, epoch: int, step: int, suffix: str | None, position: Position, kind: str | None) -> list[Path]:
        sv = self.cfg.saving
        files = self.session.save(epoch, step, suffix)
        if sv.save_state:
            files += self.save_state_only(suffix, position)
        if kind is None or not self.session.accelerator.is_main_process:
            return files
        if sv.save_last_n_epochs if kind == "epoch" else sv.save_last_n_steps:
            from engine.saving import prune_old_saves

            self.removed.update(prune_old_saves(self.run_dir, self.cfg, kind, step if kind == "step" else epoch))
        keep_states = sv.save_last_n_steps_state if kind == "step" else sv.save_last_n_epochs_state
        if keep_states:
            prune_states(self.run_dir, self.base, kind, keep_states)
        return files

    def state_due(self) -> bool:
        minutes = self.cfg.saving.save_state_every_n_minutes
        return bool(minutes) and time.monotonic() - self.last_state_time >= minutes * 60

    def save_state_only(self, suffix: str | None, position: Position) -> list[Path]:
        self.last_state_time = time.monotonic()
        acc = self.session.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return []
        folder = self.run_dir / state_dir_name(self.base, suffix)
        if folder.exists():
            return []  # a step save and a timed save at the same step: one state is enough
        path = save_state(folder, acc.unwrap_model(self.session.network), self.session.optimizer, self.session.scheduler, position)
        self.session.reporter.saved(path)
        keep = self.cfg.saving.save_last_n_steps_state
        if keep and suffix and suffix.startswith("step"):
            self.removed.update(prune_states(self.run_dir, self.base, "step", keep))
        return [path]


def _end_epoch(session, epoch: int, step: int) -> None:
    from engine.sampling import should_sample

    session.end_epoch()
    session.train_log.epoch(epoch)
    if should_sample(session.cfg.sampling, epoch, step, epoch_end=True):
        session.sample(epoch, step, epoch_end=True)


def _read_loss(loss_sum, count: int, step: int) -> float:
    value = float(loss_sum) / count
    if not math.isfinite(value):
        raise TrainingError(
            f"the loss became {value} at step {step}: lower optim.learning_rate (e.g. halve it), or use "
            "optim.mixed_precision=bf16 (or no) instead of fp16"
        )
    return value
