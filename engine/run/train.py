"""The training loop: one readable function from a planned config to LoRA files.

    prepare_session (engine/run/setup.py): model, cached inputs, LoRA, optimizer and schedule
    -> for each epoch, for each global batch: training_step (loss: engine/run/step.py, backward,
       and at each accumulation boundary the optimizer and schedule steps)
    -> the loss read, saves, states and samples when due (engine/run/cadence.py)
    -> the final save -> RunResult

Every random draw of a step comes from streams derived from (seed, epoch, batch) (engine/rng.py),
so a run is reproducible, and a resumed run continues exactly: it skips the batches already
trained and draws what the uninterrupted run would have drawn.

Gradient accumulation is the loop's own, as sd-scripts does it: the optimizer steps after every
`gradient_accumulation_steps` micro-batches and after an epoch's last one, so an epoch that is not
a multiple of the accumulation ends with a shorter step instead of carrying its last micro-batches
into the next epoch. Each micro-batch's loss is divided by the accumulation count, as accelerate's
`backward` does, the short last step included.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan, epoch_batches
from engine.errors import TrainingError
from engine.events import Phase, Reporter, RunResult, RunStatus, StepStats, StopSignal
from engine.network.max_norm import apply_max_norm
from engine.network.self_check import SavedFileCheck
from engine.run.cadence import (
    epoch_save_due,
    loss_read_due,
    step_save_due,
    text_encoder_stop_step,
)
from engine.run.distributed import agree, average_gradients
from engine.run.inputs import StoppedDuringSetup
from engine.run.prompts import sample_tag, should_sample
from engine.run.saving import Saver
from engine.run.session import Session
from engine.run.setup import prepare_session, quiet_heavy_imports, release
from engine.run.state import Position
from engine.run.step import batch_loss
from engine.run.tracking import learning_rates


def train(
    cfg: TrainConfig,
    plan: RunPlan,
    run_dir: Path,
    reporter: Reporter,
    stop: StopSignal | None = None,
    resume_from: Path | None = None,
) -> RunResult:
    """Train one config, with the plan preflight made, into `run_dir`. Bad input raises a
    LoraWizardError before the first step; a failure while training is a TrainingError whose
    message says what to change. `resume_from`: a state folder to continue from."""
    quiet_heavy_imports()
    import torch

    threads = torch.get_num_threads()  # a CPU run computes on one thread (setup.use_one_cpu_thread)
    try:
        return _train(cfg, plan, run_dir, reporter, stop or StopSignal(), resume_from)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _train(cfg: TrainConfig, plan: RunPlan, run_dir: Path, reporter: Reporter, stop: StopSignal, resume_from: Path | None) -> RunResult:
    import torch

    started = time.monotonic()
    try:
        session = prepare_session(cfg, plan, run_dir, reporter, stop, resume_from)
    except StoppedDuringSetup:
        return _stopped_before_the_first_step(run_dir, plan, started)
    try:
        if stop.requested:
            return _stopped_before_the_first_step(run_dir, plan, started)
        return run_loop(session, stop, started)
    finally:
        release(session)  # also after a failure: the next run of a queue needs the memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _stopped_before_the_first_step(run_dir: Path, plan: RunPlan, started: float) -> RunResult:
    return RunResult(run_dir, RunStatus.INTERRUPTED, 0, plan.total_steps, [], time.monotonic() - started, "stopped before the first step")


def run_loop(session: Session, stop: StopSignal, started: float) -> RunResult:
    """The loop of a prepared session: epochs of global batches, until the planned step count."""
    cfg, plan, acc, reporter = session.cfg, session.plan, session.accelerator, session.reporter
    seed, total = cfg.training.seed, plan.total_steps
    saver = Saver(
        cfg, session.run_dir, session.network, session.optimizer, session.scheduler, session.metadata, acc, reporter,
        check=SavedFileCheck(session.model),
    )
    meter = LossMeter()
    text_encoder_stop = text_encoder_stop_step(cfg.training, total)
    files = list(session.extra_files)
    losses: list[tuple[int, float]] = []  # the loss curve of the run's report (engine/report)
    start = session.start or Position(1, 0, 0, seed, acc.num_processes, total)
    step, epoch, status = start.step, start.epoch, RunStatus.DONE
    final = Position(epoch - 1, 0, step, seed, acc.num_processes, total)  # a run that has no step left
    reporter.phase(Phase.TRAINING)
    reporter.started(total, plan.epochs)
    while step < total and status == RunStatus.DONE:
        batches = epoch_batches(plan, seed, epoch, cfg.dataset.flip_aug)  # each process takes its rows
        first = start.batches_done if epoch == start.epoch else 0  # trained before a resume
        for index in range(first, len(batches)):
            epoch_end = index == len(batches) - 1
            boundary = accumulation_boundary(index, epoch_end, plan.grad_accum)
            loss, norms = training_step(session, batches[index], epoch, index, boundary)
            meter.add(loss)
            if not boundary:
                continue
            step += 1
            here = Position(epoch, index + 1, step, seed, acc.num_processes, total)
            fresh = _report_step(session, meter, step, epoch, norms, epoch_end=epoch_end, stopping=stop.requested)
            if fresh is not None:
                losses.append((step, fresh))
            if text_encoder_stop is not None and step >= text_encoder_stop and session.inputs.train_text_encoder:
                _stop_text_encoder(session, step)
            if should_sample(cfg.sampling, epoch, step, epoch_end=False):
                _sample(session, epoch, step, epoch_end=False)
            if step >= total:
                break
            stop_now, state_now = agree(step, acc.num_processes, acc.device, stop.requested, saver.state_due())
            if step_save_due(cfg.saving, step, total):
                files += saver.save(epoch, step, f"step{step:08d}", here, kind="step")
            elif state_now:
                files += saver.save_state_only(f"step{step:08d}", here)
            if stop_now:
                status = RunStatus.INTERRUPTED
                break
        if status == RunStatus.INTERRUPTED:
            break
        _end_epoch(session, epoch, step)
        final = Position(epoch, len(batches), step, seed, acc.num_processes, total)
        if epoch_save_due(cfg.saving, epoch, step, total):
            files += saver.save(epoch, step, f"{epoch:06d}", Position(epoch + 1, 0, step, seed, acc.num_processes, total), kind="epoch")
        epoch += 1
    if status == RunStatus.INTERRUPTED:
        final = here
    files += saver.save(final.epoch, step, "interrupted" if status == RunStatus.INTERRUPTED else None, final, kind=None)
    acc.wait_for_everyone()
    files = [f for f in files if f not in saver.removed]
    return RunResult(session.run_dir, status, step, total, files, time.monotonic() - started, losses=losses)


def accumulation_boundary(index: int, epoch_end: bool, accumulation: int) -> bool:
    """The optimizer steps after every `accumulation` micro-batches of an epoch and after its last."""
    return (index + 1) % accumulation == 0 or epoch_end


def training_step(session: Session, batch, epoch: int, index: int, boundary: bool = True):
    """One micro-batch: loss and backward, and at an accumulation boundary the gradient average
    over processes, clipping, the optimizer and schedule steps and max-norm. Returns the (device)
    loss and the max-norm numbers when they were applied. The benchmark times exactly this."""
    acc, opt = session.accelerator, session.cfg.optim
    loss = batch_loss(session.inputs, batch, epoch, index)
    acc.backward(loss / opt.gradient_accumulation_steps)
    if not boundary:
        return loss, None
    trainable = trainable_parameters(session.network)
    average_gradients(trainable, acc.num_processes)
    if opt.max_grad_norm > 0:
        acc.clip_grad_norm_(trainable, opt.max_grad_norm)
    session.optimizer.step()
    session.scheduler.step()  # one schedule step per optimizer step
    session.optimizer.zero_grad(set_to_none=True)
    norms = apply_max_norm(session.network, opt.scale_weight_norms, acc.device) if opt.scale_weight_norms else None
    return loss, norms


def trainable_parameters(network) -> list:
    """The parameters the optimizer updates (the text encoder's stop once it stops training)."""
    return [p for p in network.parameters() if p.requires_grad]


class LossMeter:
    """The mean loss since the last read. The sum stays on the device: reading it back is a host
    sync, which stalls a GPU, so it is read only when due (engine/run/cadence.py)."""

    def __init__(self) -> None:
        self.total = None
        self.count = 0
        self.shown: float | None = None  # the latest value read, shown until the next read

    def add(self, loss) -> None:
        loss = loss.detach()
        self.total = loss if self.total is None else self.total + loss
        self.count += 1

    def read(self, step: int) -> float:
        value = float(self.total) / self.count
        self.total, self.count = None, 0
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at step {step}: lower optim.learning_rate (e.g. halve it), or use "
                "optim.mixed_precision=bf16 (or no) instead of fp16"
            )
        self.shown = value
        return value


def _report_step(session: Session, meter: LossMeter, step: int, epoch: int, norms, *, epoch_end: bool, stopping: bool) -> float | None:
    """Log and report one optimizer step; returns the loss when it was read at this step."""
    plan = session.plan
    fresh = meter.read(step) if loss_read_due(step, plan.total_steps, epoch_end=epoch_end, stopping=stopping) else None
    session.train_log.step(step, fresh, learning_rates(session.optimizer))
    if norms is not None:
        scaled, mean_norm, max_norm = norms
        session.train_log.scalars(
            step, {"max_norm/keys_scaled": scaled, "max_norm/average_key_norm": mean_norm, "max_norm/max_key_norm": max_norm}
        )
    session.reporter.step(StepStats(step, plan.total_steps, epoch, plan.epochs, meter.shown, session.scheduler.get_last_lr()[0]))
    return fresh


def _stop_text_encoder(session: Session, step: int) -> None:
    """training.stop_text_encoder_training: from this step the text encoder's LoRA stops learning
    (its gradients stop; the optimizer skips parameters without one)."""
    for module in session.network.text_encoder_loras:
        module.requires_grad_(False)
    session.inputs.train_text_encoder = False
    percent = session.cfg.training.stop_text_encoder_training
    session.reporter.notice(f"step {step}: the text encoder stops training ({percent}% of the steps)")


def _end_epoch(session: Session, epoch: int, step: int) -> None:
    if session.inputs.images is not None:
        session.inputs.images.end_epoch()
    session.train_log.epoch(epoch)
    if should_sample(session.cfg.sampling, epoch, step, epoch_end=True):
        _sample(session, epoch, step, epoch_end=True)


def _sample(session: Session, epoch: int, step: int, *, epoch_end: bool) -> None:
    """Sample images on the main process (the others wait), shown in TensorBoard too."""
    from engine.run.sampling import generate_samples

    acc, cfg, model = session.accelerator, session.cfg, session.model
    if acc.is_main_process:
        encoders_were = [next(e.parameters()).device for e in model.text_encoders]
        for encoder in model.text_encoders:
            encoder.to(acc.device)  # the text cache may have parked them on the CPU
        paths = generate_samples(
            model,
            session.network,
            session.sample_prompts,
            sampler=cfg.sampling.sample_sampler,
            seed=cfg.training.seed,
            out_dir=session.run_dir / "sample",
            tag=sample_tag(cfg.saving.output_name, epoch, step, epoch_end),
            device=acc.device,
            dtype=session.inputs.weight_dtype,
            clip_skip=cfg.model.clip_skip,
            v_parameterization=session.inputs.v_prediction,
            max_token_length=cfg.model.max_token_length,
            default_size=cfg.dataset.width_height,
        )
        for encoder, device in zip(model.text_encoders, encoders_were):
            encoder.to(device)
        session.train_log.samples(step, paths)
        session.reporter.notice(f"sample images at step {step}: {paths[-1]}")
    acc.wait_for_everyone()
