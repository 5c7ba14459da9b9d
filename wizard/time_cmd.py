"""`--measure` and `--finish-by HH:MM` on demo, replay and queue, and the plan's time table: each
run's estimated duration and when it ends, from step times measured on this machine
(engine/queue/estimate.py, measure.py, budget.py). Also the wizard's "finish by?" question."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from engine.events import SilentReporter
from wizard.screen import Screen


@dataclass(frozen=True)
class TimeOptions:
    finish_by: str | None = None  # HH:MM
    measure: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--finish-by", metavar="HH:MM", default=None,
        help="train as many of each run's epochs as fit before this time (never more than the config says), and say what was picked",
    )
    parser.add_argument(
        "--measure", action="store_true",
        help="measure each kind of run's step time now (a few warm steps) instead of at its first run; kept for the estimates",
    )


def options(args) -> TimeOptions:
    return TimeOptions(getattr(args, "finish_by", None), getattr(args, "measure", False))


class _Notices(SilentReporter):
    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.screen = screen

    def notice(self, message: str) -> None:
        self.screen.say(message, "dim")


@dataclass(frozen=True)
class TimeTable:
    """Each run's estimate as rows of text, and what the whole queue comes to."""

    rows: list[list[str]]
    caption: str


def timed(screen: Screen, planned: list, opts: TimeOptions) -> tuple[list, TimeTable]:
    """Measure what is asked (and, for a budget, what is not measured yet), fit the runs to the
    budget, and the time table of the runs as they will train."""
    from engine.queue import budget
    from engine.queue.estimate import StepTimes, estimate
    from engine.queue.measure import key_of, measure_queue

    if not planned:
        return planned, TimeTable([], "")
    table = StepTimes.load()
    keys = [key_of(run) for run in planned]
    if opts.measure or (opts.finish_by and any(table.get(k) is None and table.closest(k) is None for k in keys)):
        table = measure_queue(planned, _Notices(screen), again=opts.measure, table=table)
    start = budget.now()
    estimates = [estimate(k, run.plan.grad_accum, run.plan.total_steps, table) for k, run in zip(keys, planned)]
    if opts.finish_by:
        fitted = budget.fit_to_deadline(planned, estimates, start, budget.parse_finish_by(opts.finish_by, start))
        planned = fitted.runs
        for note in fitted.notes:
            screen.say(note, "cyan")
        estimates = [estimate(k, run.plan.grad_accum, run.plan.total_steps, table) for k, run in zip(keys, planned)]
    return planned, time_table(planned, estimates, start, screen.texts["budget"])


def time_table(planned: list, estimates: list, start, texts: dict[str, str]) -> TimeTable:
    from engine.queue.estimate import Basis, finish_times, human_duration

    ends = finish_times(start, [e.seconds for e in estimates])
    rows = [
        [
            run.source,
            str(run.plan.total_steps),
            "-" if est.seconds_per_step is None else f"{est.seconds_per_step:.2f} s",
            "?" if est.seconds is None else f"~{human_duration(est.seconds)}",
            "?" if end is None else f"{end:%H:%M}",
            texts[f"basis_{est.basis.name.lower()}"],
        ]
        for run, est, end in zip(planned, estimates, ends)
    ]
    caption = texts["queue_ends"].format(time=f"{ends[-1]:%H:%M}") if ends and ends[-1] is not None else texts["not_measured"]
    if any(e.basis == Basis.SCALED for e in estimates):
        caption += " " + texts["scaled_note"]
    return TimeTable(rows, caption)


def show_times(screen: Screen, times: TimeTable) -> None:
    """The time table under the plan, a list per run where it does not fit the terminal."""
    from wizard.run_view import show_table_or_list

    if not times.rows:
        return
    texts = screen.texts["budget"]
    show_table_or_list(screen, texts["title"], [texts[c] for c in TIME_COLUMNS], times.rows)
    screen.say(times.caption, "dim")


TIME_COLUMNS = ("run", "steps", "per_step", "duration", "ends", "basis")


def ask_finish_by(texts: dict[str, Any]) -> str | None:
    """The wizard's last question before training: a clock time, or nothing for no limit."""
    import questionary

    from wizard.prompt_kit import fit_message, ready

    ui = texts["budget"]
    answer = ready(questionary.text(fit_message(ui["finish_by"]), validate=finish_by_check(ui))).unsafe_ask().strip()
    return answer or None


def finish_by_check(ui: dict[str, str]):
    """The answer's check: empty (no limit) or a clock time HH:MM."""
    from engine.errors import ConfigError
    from engine.queue.budget import now, parse_finish_by

    def validate(typed: str) -> bool | str:
        if not typed.strip():
            return True
        try:
            parse_finish_by(typed, now())
        except ConfigError:
            return ui["bad_time"]
        return True

    return validate
