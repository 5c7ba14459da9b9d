"""What a queue trains and what its end means: the configs that load (with --output applied), the
runs that pass preflight, what `--skip-invalid` does with the others, and the outcome a script
can trust as an exit code. The command line (wizard/app.py) only parses arguments and renders.

    0  every run trained          1  a run failed while training
    2  bad input (config, path, dataset), reported before any training starts
    130  cancelled by the user

With --skip-invalid a queue that trained its valid runs ends with 1 when a run failed while
training, else 2 when a config was invalid (and skipped), else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.config.defaults import suggested_precision
from engine.config.io import load_config
from engine.config.machine import Machine, this_machine
from engine.config.schema import TrainConfig
from engine.errors import ConfigError, LoraWizardError, problems_message
from engine.events import Outcome
from engine.queue.journal import Entry, Journal, RunState
from engine.queue.preflight import PlannedRun, check_runs, disk_problems
from engine.run.distributed import launched_processes

REFUSED = "nothing was trained, fix these first"


def demo_config(output: Path | None = None, machine: Machine | None = None) -> TrainConfig:
    """The built-in demo model on the sample dataset, at the precision this machine trains in
    (the wizard's defaults, pressing Enter everywhere)."""
    machine = machine or this_machine()
    data: dict = {"optim": {"mixed_precision": suggested_precision(machine.cuda, machine.bf16)}}
    if output is not None:
        data["saving"] = {"output_folder": str(output)}
    return TrainConfig.model_validate(data)


def with_output(cfg: TrainConfig, output: Path | None) -> TrainConfig:
    """`--output DIR`: the same config, writing into DIR (a new, validated config)."""
    if output is None:
        return cfg
    data = cfg.model_dump(mode="json")
    data["saving"]["output_folder"] = str(output)
    return TrainConfig.model_validate(data)


def load_runs(paths: Sequence[Path], output: Path | None = None) -> tuple[list[tuple[str, TrainConfig]], list[str]]:
    """(source name, config) of the files that load, and the problems of those that do not."""
    runs, problems = [], []
    for path in paths:
        try:
            runs.append((Path(path).name, with_output(load_config(path), output)))
        except LoraWizardError as exc:
            problems.append(str(exc))
    return runs, problems


def load_one(path: Path, output: Path | None = None) -> list[tuple[str, TrainConfig]]:
    """`replay`: the one config, or its problems as a ConfigError."""
    runs, problems = load_runs([path], output)
    if problems:
        raise ConfigError(problems_message(REFUSED, problems))
    return runs


@dataclass
class QueueCheck:
    runs: list[tuple[Entry, PlannedRun]]  # to train, in order
    invalid: list[tuple[Entry, list[str]]]  # refused by preflight (trained by nobody)
    problems: list[str]  # every line of the invalid ones, for the user

    @property
    def title(self) -> str:
        total = len(self.runs) + len(self.invalid)
        return f"{len(self.invalid)} of {total} configs cannot train"


def check_queue(todo: Sequence[Entry], output: Path | None, *, skip_invalid: bool) -> QueueCheck:
    """Load and preflight every run of a queue before the first starts. Without skip_invalid any
    problem refuses the whole queue (a ConfigError listing all of them); with it, the invalid runs
    are returned to be recorded failed. Too little disk for the valid runs refuses either way."""
    problems_of: dict[int, list[str]] = {}
    loaded: list[tuple[int, tuple[str, TrainConfig]]] = []
    for index, entry in enumerate(todo):
        runs, problems = load_runs([Path(entry.config)], output)
        if problems:
            problems_of[index] = problems
        else:
            loaded.append((index, runs[0]))
    planned: dict[int, PlannedRun] = {}
    for (index, _), checked in zip(loaded, check_runs([run for _, run in loaded], launched_processes())):
        if isinstance(checked, PlannedRun):
            planned[index] = checked
        else:
            problems_of[index] = checked
    problems = [p for index in sorted(problems_of) for p in problems_of[index]]
    if problems and not skip_invalid:
        raise ConfigError(problems_message(REFUSED, problems))
    disk = disk_problems(list(planned.values()))
    if disk:
        raise ConfigError(problems_message(REFUSED, problems + disk))
    return QueueCheck(
        runs=[(todo[index], planned[index]) for index in sorted(planned)],
        invalid=[(todo[index], problems_of[index]) for index in sorted(problems_of)],
        problems=problems,
    )


def in_memory_queue(planned: Sequence[PlannedRun]) -> tuple[Journal, list[tuple[Entry, PlannedRun]]]:
    """demo, replay and the wizard's runs: a queue whose journal is kept in memory only."""
    journal = Journal(path=None)
    journal.entries = [Entry(run.source, "") for run in planned]
    return journal, list(zip(journal.entries, planned))


def outcome(runs: Sequence[tuple[Entry, PlannedRun]], invalid: Sequence, *, stopped: bool) -> Outcome:
    """The exit code of a queue that has run: cancelled, a run failed while training, a config
    was invalid (--skip-invalid), or everything trained."""
    if stopped:
        return Outcome.CANCELLED
    if any(entry.state == RunState.FAILED for entry, _ in runs):
        return Outcome.RUN_FAILED
    return Outcome.BAD_INPUT if invalid else Outcome.OK
