"""Training a queue's runs in order: each recorded in the journal as it starts and ends, a failure
isolated (recorded, its memory freed, the next run started), a stop request ending the current run
(saved as -interrupted) and the queue; in folder mode, finished configs moved to complete/ or
failed/ with the error beside them. No printing: a QueueListener renders each run."""

from __future__ import annotations

import errno
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from engine.errors import LoraWizardError
from engine.events import Reporter, RunResult, StopSignal
from engine.fileio import atomic_write_text, next_free_path
from engine.queue.journal import (
    COMPLETE_DIR,
    FAILED_DIR,
    FINISHED,
    Entry,
    Journal,
    RunState,
    now,
)
from engine.queue.memory import release_memory
from engine.queue.preflight import PlannedRun
from engine.queue.runner import (
    Trainer,
    default_trainer,
    new_run_folder,
    run_one,
)
from engine.run.distributed import is_main_process, launched_processes


class QueueListener(Protocol):
    def starting(self, entry: Entry, run: PlannedRun, number: int, count: int) -> Reporter:
        """A run begins; return the reporter for its progress."""
        ...

    def ended(self, entry: Entry, result: RunResult | None) -> None:
        """A run ended (entry.state says how; result is None when it raised)."""
        ...


def run_queue(
    journal: Journal,
    runs: list[tuple[Entry, PlannedRun]],
    listener: QueueListener,
    stop: StopSignal,
    invalid: Sequence[tuple[Entry, list[str]]] = (),
    trainer: Trainer = default_trainer,
    *,
    report: bool = True,
) -> None:
    """Train the runs in order. A run that raises is recorded as failed and the next one starts; a
    stop request ends the current run (saved as -interrupted) and the queue. A second Ctrl-C
    (KeyboardInterrupt) is recorded as interrupted and passed on.

    `invalid` (queue --skip-invalid): runs that preflight refused, with their problems. They are
    recorded as failed before the first run starts, with the problems as the reason, and in
    folder mode moved to failed/ with the problems beside them, as a run that failed.

    `report`: after each run that trained to its end, its contact sheet (engine/report)."""
    for entry, problems in invalid:  # an earlier attempt's run_dir (a resume) is kept in the record
        _finish(entry, RunState.FAILED, "not trained, the config has problems: " + "; ".join(problems), time.monotonic())
    journal.save()
    for entry in journal.entries:
        _move_finished_config(journal, entry)  # a crash may have come between "done" and the move
    for number, (entry, run) in enumerate(runs, start=1):
        if stop.requested:
            break
        _run_entry(journal, entry, run, listener, stop, number, len(runs), trainer, report)
        release_memory()


def _run_entry(
    journal: Journal, entry: Entry, run: PlannedRun, listener: QueueListener, stop: StopSignal, number: int, count: int, trainer: Trainer,
    report: bool = True,
) -> None:
    previous_run_dir = entry.run_dir  # an earlier attempt's folder, when this is a retry
    folder = new_run_folder(run.config)
    run_dir = folder.path
    entry.state, entry.reason, entry.run_dir, entry.files = RunState.RUNNING, None, str(run_dir), []
    entry.steps, entry.total_steps, entry.seconds, entry.finished = 0, run.plan.total_steps, 0.0, None
    entry.notes = []
    entry.attempts += 1
    entry.started = now()
    journal.save()
    started = time.monotonic()  # the whole run, model loading and latent caching included
    reporter = listener.starting(entry, run, number, count)
    resume_from = _last_state(previous_run_dir, run, reporter)
    result = None
    try:
        result = run_one(run, reporter, stop, folder, trainer=trainer, resume_from=resume_from)
    except KeyboardInterrupt:
        _finish(entry, RunState.INTERRUPTED, "stopped at once by a second Ctrl-C: nothing was saved for this run", started)
        journal.save()
        listener.ended(entry, None)
        raise
    except Exception as exc:  # noqa: BLE001 - isolate the failure: record it, free its memory, go on
        _finish(entry, RunState.FAILED, _reason(exc, run_dir), started)
        if is_main_process():
            _write_error(run_dir / "error.txt", entry, exc)
        if launched_processes() > 1:
            journal.save()
            raise  # the other processes wait on this one: end them all (the launcher does) with this error
    else:
        _finish(entry, RunState(result.status), result.error, started)
        entry.files = [str(f) for f in result.files]
        entry.steps = result.steps
        entry.notes = list(result.notes)
        if result.status == RunState.INTERRUPTED:
            entry.reason = interrupted_reason(result)
    journal.save()
    if report and result is not None and result.status == RunState.DONE and not stop.requested:
        _add_report(journal, entry, run, result, reporter)
    listener.ended(entry, result)
    _move_finished_config(journal, entry)


def _add_report(journal: Journal, entry: Entry, run: PlannedRun, result: RunResult, reporter: Reporter) -> None:
    """The run's contact sheet, made after the run is recorded done (a crash while rendering
    loses the sheet, never the run). It is not worth failing a trained run for: a failure is a
    note in the summary. A multi-process run has none (the other processes would wait for it)."""
    from engine.report.sheet import write_report

    if not is_main_process() or launched_processes() > 1:
        return
    try:
        files = write_report(run.config, run.plan, result, reporter)
    except Exception as exc:  # noqa: BLE001 - the LoRA files are made; the sheet is an extra
        result.notes.append(f"no contact sheet: {type(exc).__name__}: {exc}")
        files = []
    finally:
        release_memory()
    result.files += files
    entry.files += [str(f) for f in files]
    entry.notes = list(result.notes)
    journal.save()


def interrupted_reason(result: RunResult) -> str:
    """What an interrupted run left: a stop while the model loaded or inputs were cached trained
    nothing and saved nothing."""
    if result.steps == 0:
        return "stopped before the first step, while the run was still getting ready: nothing was trained or saved"
    return f"stopped after step {result.steps} of {result.total_steps}; the LoRA so far is saved"


def _last_state(previous_run_dir: str | None, run: PlannedRun, reporter: Reporter) -> Path | None:
    """A retried run that saved training states (saving.save_state) goes on from its newest one
    instead of starting over: an interrupted or killed night costs minutes, not the run. The
    config is not changed: the state is where the run starts, not a setting."""
    from engine.run.state import latest_state

    if previous_run_dir is None or not run.config.saving.save_state or run.config.saving.resume is not None:
        return None
    state = latest_state(Path(previous_run_dir))
    if state is not None:
        reporter.notice(f"resuming from {state} (the last state the earlier attempt saved)")
    return state


def _finish(entry: Entry, state: RunState, reason: str | None, started: float) -> None:
    entry.state, entry.reason, entry.finished = state, reason, now()
    entry.seconds = round(time.monotonic() - started, 1)


# OSErrors that come from the machine (a full or read-only disk, permissions), not from a bug
_DISK_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, name)}


def _reason(exc: Exception, run_dir: Path) -> str:
    if isinstance(exc, LoraWizardError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return (
            f"could not write a file: {exc.strerror}{where}; free disk space or fix the output folder's "
            f"permissions, then train this config again (details in {run_dir / 'error.txt'})"
        )
    return (
        f"unexpected error {type(exc).__name__}: {exc} (a bug in lora-wizard rather than in the config; "
        f"the traceback is in {run_dir / 'error.txt'})"
    )


def _write_error(path: Path, entry: Entry, exc: Exception) -> Path:
    text = f"config: {entry.config}\nrun folder: {entry.run_dir}\nfailed: {entry.finished}\n\n{entry.reason}\n"
    if not isinstance(exc, LoraWizardError):
        text += "\n" + "".join(traceback.format_exception(exc))
    return atomic_write_text(next_free_path(path), text)


def _move_finished_config(journal: Journal, entry: Entry) -> None:
    """Folder mode: a done config goes to DIR/complete/, a failed one to DIR/failed/ with
    `<name>.error.txt` beside it. Never over an existing file."""
    config = Path(entry.config)
    if not is_main_process() or journal.folder is None or entry.state not in FINISHED or entry.moved_to is not None or not config.is_file():
        return
    target_dir = journal.folder / (COMPLETE_DIR if entry.state == RunState.DONE else FAILED_DIR)
    target_dir.mkdir(exist_ok=True)
    target = next_free_path(target_dir / config.name)
    config.rename(target)
    entry.moved_to = str(target)
    journal.save()
    if entry.state == RunState.FAILED:
        error = None if entry.run_dir is None else Path(entry.run_dir) / "error.txt"
        if error is not None and error.is_file():
            details = error.read_text(encoding="utf-8")
        else:  # no run folder: refused by preflight (--skip-invalid), or the error file was lost
            details = f"config: {entry.config}\nfailed: {entry.finished}\n\n{entry.reason}\n"
        atomic_write_text(next_free_path(target.with_name(f"{target.stem}.error.txt")), details)
