"""Training from the command line: `demo` and `replay` (one config, no journal), `queue` and the
wizard's runs (a journal on disk, so a crash or a Ctrl-C can be carried on with `queue --resume`).

The wizard queues the configs it saved exactly as `queue a.json b.json` run from the same folder
would: the list journal of the working folder (engine/queue/journal.py). So `queue --resume` carries
on with a wizard's runs, and the wizard's next start offers to; configs queued in the wizard and
not trained yet (Ctrl-C in the next config's questions) are recorded there too, as pending. A
queue that did not finish is never dropped silently: the wizard offers to carry on with it, to
train the new configs after it, or to drop it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import questionary

from engine.events import Outcome
from wizard import time_cmd
from wizard.prompt_kit import select
from wizard.run_view import QueueConsole, show_plan, show_summary
from wizard.screen import Screen

CARRY_ON, KEEP, DROP = "carry_on", "keep", "drop"


def train_runs(
    screen: Screen, runs, trainer, *, dry_run: bool, timing: time_cmd.TimeOptions | None = None, report: bool = True
) -> int:
    """demo and replay: checked together, trained in order, no journal. `timing`: --measure and
    --finish-by (wizard/time_cmd.py); `report`: a contact sheet after each run."""
    from engine.queue.policy import in_memory_queue
    from engine.queue.preflight import preflight
    from engine.run.distributed import launched_processes

    planned = preflight(runs, launched_processes())  # the step count of the process count launched
    planned, times = time_cmd.timed(screen, planned, timing or time_cmd.TimeOptions())  # --finish-by picks the epochs
    show_plan(screen, planned)
    time_cmd.show_times(screen, times)
    if dry_run:
        return Outcome.OK
    journal, queued = in_memory_queue(planned)
    return execute(screen, journal, queued, trainer, resume_hint=None, report=report)


def queue_command(screen: Screen, folder: Path | None, configs: list[Path], *, resume: bool, output: Path | None,
                  dry_run: bool, skip_invalid: bool, trainer, timing: time_cmd.TimeOptions | None = None,
                  report: bool = True) -> int:
    """`queue CONFIG... | --folder DIR [--resume] [--dry-run]` (and the wizard's runs): every run
    checked before the first starts, each state recorded in the journal."""
    from engine.errors import problems_message
    from engine.queue.journal import journal_path, open_queue, queue_lock
    from engine.queue.policy import check_queue

    texts = screen.texts["queue"]
    path = journal_path(folder)
    with queue_lock(path):
        setup = open_queue(path, folder, configs, resume=resume, output=output)
        journal = setup.journal
        for note in setup.notes:
            screen.say(note, "dim")
        out = None if journal.output is None else Path(journal.output)
        checked = check_queue(setup.todo, out, skip_invalid=skip_invalid)
        if checked.invalid:
            then = texts["dry_invalid"] if dry_run else texts["skip_invalid"]
            screen.say(f"{screen.texts['ui']['error']} {problems_message(f'{checked.title} (--skip-invalid: {then})', checked.problems)}", "red")
        planned, times = time_cmd.timed(screen, [run for _, run in checked.runs], timing or time_cmd.TimeOptions())
        checked.runs = [(entry, run) for (entry, _), run in zip(checked.runs, planned)]  # --finish-by may shorten them
        if planned:
            show_plan(screen, planned)
            time_cmd.show_times(screen, times)
        if dry_run:
            return Outcome.BAD_INPUT if checked.invalid else Outcome.OK
        if not planned:
            screen.say(texts["nothing_left"])
        return execute(
            screen, journal, checked.runs, trainer, resume_hint=resume_command(screen, journal.folder), invalid=checked.invalid,
            report=report,
        )


def resume_command(screen: Screen, folder: Path | None) -> str:
    return f"{screen.command} queue {f'--folder {folder} ' if folder else ''}--resume"


def execute(screen: Screen, journal, runs, trainer, *, resume_hint: str | None, invalid=(), report: bool = True) -> int:
    """Run the queue with Ctrl-C handling, then print the summary. First Ctrl-C (or SIGTERM, as at
    shutdown): finish the step, save `<name>-interrupted`, stop the queue. Second: leave at once.
    `invalid`: (entry, problems) of runs that preflight refused (--skip-invalid), recorded failed."""
    from engine.events import StopSignal
    from engine.queue.execute import run_queue
    from engine.queue.policy import outcome
    from engine.queue.runner import default_trainer

    texts = screen.texts["queue"]
    stop = StopSignal()

    def on_interrupt(signum, frame):
        if stop.requested:  # second press: leave now
            raise KeyboardInterrupt
        screen.say(texts["stopping"], "yellow")
        stop.request()

    listener = QueueConsole(screen)
    previous = {sig: signal.signal(sig, on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_queue(journal, runs, listener, stop, invalid, default_trainer if trainer is None else trainer, report=report)
    except KeyboardInterrupt:
        if resume_hint:
            screen.say(texts["recorded"].format(path=journal.path), "yellow")
            screen.say(texts["carry_on"].format(folder=Path.cwd()), "yellow")
            screen.command_line(resume_hint)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    show_summary(screen, journal, {id(entry) for entry, _ in [*runs, *invalid]}, listener)
    if stop.requested and resume_hint:
        screen.say(texts["stopped"].format(folder=Path.cwd()), "yellow")
        screen.command_line(resume_hint)
    return outcome(runs, invalid, stopped=stop.requested)


# ---- the wizard's queue ---------------------------------------------------------------------------------


def unfinished_configs() -> list[Path]:
    """The configs of this folder's list queue that did not finish (none without a journal)."""
    from engine.queue.journal import Journal, journal_path

    path = journal_path(None)
    if not path.is_file():
        return []
    return [Path(e.config) for e in Journal.load(path).unfinished()]


def offer_unfinished_queue(screen: Screen, trainer) -> int | None:
    """At the wizard's start: a queue of this folder that did not finish (a Ctrl-C, a crash, configs
    queued and never trained) is offered: carry on with it now (returns the exit code), keep it
    (the new configs train after it: None), or drop it (None)."""
    from engine.errors import ConfigError
    from engine.queue.journal import Journal, journal_path

    ui = screen.texts["ui"]
    path = journal_path(None)
    try:
        left = Journal.load(path).unfinished() if path.is_file() else []
    except ConfigError as err:
        screen.say(str(err), "yellow")
        return None
    if not left:
        return None
    runs = ", ".join(f"{e.name} ({screen.texts['summary'].get(e.state.value, e.state.value)})" for e in left)
    screen.say(ui["queue_found"].format(runs=runs, path=path), "yellow")
    choices = [
        questionary.Choice(ui["queue_carry_on"], value=CARRY_ON),
        questionary.Choice(ui["queue_keep"], value=KEEP),
        questionary.Choice(ui["queue_drop"], value=DROP),
    ]
    choice = select(ui["queue_what"], choices, ui, back=False).unsafe_ask()
    if choice == CARRY_ON:
        return queue_command(screen, None, [], resume=True, output=None, dry_run=False, skip_invalid=False, trainer=trainer)
    if choice == DROP:
        path.unlink(missing_ok=True)
        screen.say(ui["queue_dropped"])
    return None


def joined_queue(saved: list[Path]) -> tuple[bool, list[Path]]:
    """(resume?, configs): the wizard's configs after the unfinished runs of this folder's queue
    (a resume of it, which drops the runs whose config is gone), or a new queue of them."""
    earlier = unfinished_configs()
    return bool(earlier), [*(p for p in earlier if p.is_file()), *saved]


def wizard_queue(screen: Screen, saved: list[Path], trainer, timing: time_cmd.TimeOptions | None = None) -> int:
    """Train the configs the wizard saved, after the unfinished runs of this folder's queue."""
    resume, configs = joined_queue(saved)
    if resume:
        screen.say(screen.texts["ui"]["queue_after"].format(count=len(configs) - len(saved)))
    return queue_command(
        screen, None, configs, resume=resume, output=None, dry_run=False, skip_invalid=False, trainer=trainer, timing=timing
    )


def record_queued(screen: Screen, saved: list[Path]) -> None:
    """Configs queued in the wizard, left untrained by a Ctrl-C: recorded as pending in this
    folder's queue, so `queue --resume` (or the wizard's next start) trains them."""
    from engine.queue.journal import journal_path, open_queue, queue_lock

    path = journal_path(None)
    with queue_lock(path):
        resume, configs = joined_queue(saved)
        open_queue(path, None, configs, resume=resume, output=None).journal.save()
    screen.say(screen.texts["ui"]["queued_kept"].format(count=len(saved), folder=Path.cwd()), "yellow")
    screen.command_line(resume_command(screen, None))
