"""Training one preflighted config into run<N>/, and what is left to do when a run fails.

The queue (engine/queue/journal.py) calls these; they never print. A run's outputs all go in a fresh
`<output_folder>/run<N>/` (LoRA files, the config that made them, the tag list), so nothing from an
earlier run is ever overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.errors import TrainingError
from engine.events import Reporter, RunResult, StopSignal
from engine.queue.memory import is_out_of_memory, out_of_memory_advice
from engine.queue.preflight import PlannedRun

#: what trains a planned run: engine.run.train.train, or a test's fake
Trainer = Callable[..., RunResult]


def default_trainer(cfg: TrainConfig, plan, run_dir: Path, reporter: Reporter, stop=None, resume_from=None) -> RunResult:
    """engine.run.train.train, imported when a run starts (the queue itself needs no torch)."""
    from engine.run.train import train

    return train(cfg, plan, run_dir, reporter, stop, resume_from)


@dataclass(frozen=True)
class RunFolder:
    path: Path  # <output_folder>/run<N>
    config: Path | None  # the config saved in it (None on the processes that do not write)


def new_run_folder(cfg: TrainConfig) -> RunFolder:
    """The one place a run folder is made: the next free `<output_folder>/run<N>`, with the config
    that trains into it saved inside. With several processes the main one makes it and every
    process gets its path."""
    from engine.config.io import save_config
    from engine.fileio import next_run_dir
    from engine.run.distributed import is_main_process, shared_path

    written: list[Path] = []

    def make() -> Path:
        folder = next_run_dir(Path(cfg.saving.output_folder).expanduser())
        written.append(save_config(cfg, folder, name=cfg.saving.output_name or "config"))
        return folder

    path = shared_path(make)
    return RunFolder(path, written[0] if written and is_main_process() else None)


def run_one(
    planned: PlannedRun,
    reporter: Reporter,
    stop: StopSignal | None = None,
    folder: RunFolder | None = None,
    *,
    trainer: Trainer = default_trainer,
    resume_from: Path | None = None,
) -> RunResult:
    """Train one preflighted config, with its plan, into `folder` (a new run folder if None).
    Running out of memory is retried once with a smaller batch at the same effective batch
    (engine/queue/oom.py); a second time, it is a TrainingError that says what to change."""
    from engine.queue.measure import StepClock
    from engine.queue.oom import (  # reads run states with torch: only once a run starts
        SavedFiles,
        retry_smaller,
    )
    from engine.run.distributed import launched_processes

    cfg = planned.config
    folder = folder or new_run_folder(cfg)
    clock = StepClock(reporter)  # the run's own step time, for the estimates of later runs
    recorder = SavedFiles(clock)
    advice = None
    try:
        result = trainer(cfg, planned.plan, folder.path, recorder, stop, resume_from)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if launched_processes() > 1:  # the other processes cannot follow a retry: all end
            raise TrainingError(out_of_memory_advice(cfg, exc)) from exc
        advice = out_of_memory_advice(cfg, exc)
    if advice is not None:  # retried outside the except block: its traceback holds the failed model
        result = retry_smaller(planned, folder.path, recorder, stop, trainer, advice, resume_from)
    else:
        _keep_step_time(planned, clock)
    if folder.config is not None:
        result.files.insert(0, folder.config)
    return result


def _keep_step_time(planned: PlannedRun, clock) -> None:
    """A run of a kind not measured yet leaves its step time (engine/queue/measure.py). The
    estimate is not worth a run: a cache folder that cannot be written is passed over."""
    from engine.queue.measure import record_run
    from engine.run.distributed import is_main_process

    if is_main_process():
        try:
            record_run(planned, clock)
        except OSError:
            pass
