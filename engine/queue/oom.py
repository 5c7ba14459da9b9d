"""Out of memory is not the end of a night: a run that runs out of memory is retried once, from its
last saved state (or its start), with a smaller batch and more gradient accumulation, so the
effective batch and the step count stay those planned; the summary says so. A second out-of-memory
fails the run with `out_of_memory_advice`: what to change in the config.

The batch goes to its largest proper divisor (half an even batch; 1 for an odd one) and the
accumulation grows by the same factor: batch x accumulation is unchanged. Buckets can make an
epoch a step shorter or longer at the new batch (each bucket ends in a partial batch); then the
retry keeps the planned step count with training.max_steps, and says that epochs now end at other
steps. The retried steps see the images in another grouping (batches are drawn at the new size),
so the result is not the bytes an uninterrupted run would give; the schedule, the step count and
the optimizer state carry on exactly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan, make_plan
from engine.errors import ConfigError, TrainingError
from engine.events import Reporter, RunResult, StopSignal
from engine.queue.memory import is_out_of_memory, out_of_memory_advice, release_memory
from engine.queue.preflight import PlannedRun
from engine.run.state import (
    STATE_FILE,
    STATE_VERSION,
    Position,
    latest_state,
    read_position,
)


@dataclass(frozen=True)
class SmallerBatch:
    run: PlannedRun  # the derived config and its plan
    note: str  # what changed, for the run's summary


def smaller_batch(planned: PlannedRun) -> SmallerBatch | str:
    """The run with a smaller batch and more accumulation at the same effective batch and step
    count; or why there is none (batch 1 has nothing to give)."""
    cfg, plan = planned.config, planned.plan
    batch, accumulation = cfg.training.batch_size, cfg.optim.gradient_accumulation_steps
    if batch == 1:
        return "the batch is already 1"
    smaller = max(d for d in range(1, batch) if batch % d == 0)
    factor = batch // smaller
    data = cfg.model_dump(mode="json")
    data["training"]["batch_size"] = smaller
    data["optim"]["gradient_accumulation_steps"] = accumulation * factor
    derived = _validated(data)
    new_plan = make_plan(derived, plan.num_processes)
    epochs_note = ""
    if new_plan.total_steps != plan.total_steps:  # buckets' partial batches: pin the step count
        data["training"]["max_steps"] = plan.total_steps
        derived = _validated(data)
        new_plan = make_plan(derived, plan.num_processes)
        epochs_note = f"; an epoch is now {new_plan.steps_per_epoch} steps instead of {plan.steps_per_epoch}"
    note = (
        f"out of memory at batch {batch}: retried with batch {smaller} and gradient accumulation "
        f"{accumulation * factor} (effective batch {new_plan.effective_batch} and {new_plan.total_steps} steps as planned{epochs_note})"
    )
    return SmallerBatch(replace(planned, config=derived, plan=new_plan), note)


def _validated(data: dict) -> TrainConfig:
    from engine.config.io import validated

    cfg, problems = validated(data)
    if cfg is None:
        raise ConfigError("the smaller batch for the out-of-memory retry breaks a rule: " + "; ".join(map(str, problems)))
    return cfg


def position_in(plan: RunPlan, step: int, seed: int, num_processes: int) -> Position:
    """Where a run of `plan` stands after `step` optimizer steps: the epoch, and the micro-batches
    of that epoch that the steps done in it have used (at the plan's accumulation)."""
    epoch = step // plan.steps_per_epoch + 1
    done_in_epoch = step - (epoch - 1) * plan.steps_per_epoch
    return Position(epoch, done_in_epoch * plan.grad_accum, step, seed, num_processes, plan.total_steps)


def retry_start(state: Path | None, plan: RunPlan, into: Path) -> Path | None:
    """A training state as a state folder `into` whose position is the same step in the retry's
    plan (the weights, optimizer and schedule files are linked or copied unchanged); None for a
    retry from the start."""
    if state is None:
        return None
    old = read_position(state)
    into.mkdir(parents=True)
    for name in ("network.safetensors", "optimizer.pt", "scheduler.pt"):
        _link_or_copy(state / name, into / name)
    position = position_in(plan, old.step, old.seed, old.num_processes)
    (into / STATE_FILE).write_text(json.dumps({"version": STATE_VERSION, **asdict(position)}, indent=2), encoding="utf-8")
    return into


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        target.hardlink_to(source)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


class SavedFiles:
    """The run's reporter, also keeping the paths saved through it: the files of an attempt that
    ran out of memory belong to the run's result (its epoch saves before the failure)."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.paths: list[Path] = []

    def saved(self, path: Path) -> None:
        self.paths.append(Path(path))
        self._reporter.saved(path)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def retry_smaller(
    planned: PlannedRun, run_dir: Path, reporter: SavedFiles, stop: StopSignal | None, trainer, advice: str, resume_from: Path | None
) -> RunResult:
    """The one retry after an out-of-memory failure of `planned` in `run_dir`: from the newest
    state there (else the state the attempt started from, else the start) with a smaller batch.
    No smaller batch, or out of memory again: a TrainingError with the advice."""
    from engine.config.io import save_config

    derived = smaller_batch(planned)
    if isinstance(derived, str):
        raise TrainingError(f"{advice} (no retry with a smaller batch: {derived})")
    release_memory()  # the failed attempt's model and optimizer, before the retry loads its own
    state = latest_state(run_dir) or resume_from or planned.config.saving.resume
    scratch = Path(tempfile.mkdtemp(prefix=".oom-retry-", dir=run_dir))
    try:
        start = retry_start(state, derived.run.plan, scratch / "start-state")
        where = f"from {state.name} (step {read_position(state).step})" if start is not None else "from the start"
        note = f"{derived.note}, {where}"
        reporter.notice(note)
        try:
            result = trainer(derived.run.config, derived.run.plan, run_dir, reporter, stop, start)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise TrainingError(f"{out_of_memory_advice(derived.run.config, exc)} (out of memory again after: {note})") from exc
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    name = f"{planned.config.saving.output_name or 'config'}-oom-retry"
    config = save_config(derived.run.config, run_dir, name=name)  # what the retry trained
    earlier = [p for p in dict.fromkeys(reporter.paths) if p.exists() and p not in result.files]
    result.files = [config, *earlier, *result.files]
    result.notes.append(note)
    return result

