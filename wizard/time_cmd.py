"""`--measure` and `--finish-by HH:MM` on demo, replay and queue, and the plan's time table: each
run's estimated duration and when it ends, from step times measured on this machine
(engine/queue/estimate.py, measure.py, budget.py). Also the wizard's "finish by?" question."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.events import SilentReporter


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
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def notice(self, message: str) -> None:
        self.console.print(f"[dim]{escape(message)}[/]", highlight=False)


def timed(console: Console, planned: list, opts: TimeOptions) -> tuple[list, Table]:
    """Measure what is asked (and, for a budget, what is not measured yet), fit the runs to the
    budget, and the time table of the runs as they will train."""
    from engine.queue import budget
    from engine.queue.estimate import StepTimes, estimate
    from engine.queue.measure import key_of, measure_queue

    if not planned:
        return planned, Table()
    table = StepTimes.load()
    keys = [key_of(run) for run in planned]
    if opts.measure or (opts.finish_by and any(table.get(k) is None and table.closest(k) is None for k in keys)):
        table = measure_queue(planned, _Notices(console), again=opts.measure, table=table)
    start = budget.now()
    estimates = [estimate(k, run.plan.grad_accum, run.plan.total_steps, table) for k, run in zip(keys, planned)]
    if opts.finish_by:
        fitted = budget.fit_to_deadline(planned, estimates, start, budget.parse_finish_by(opts.finish_by, start))
        planned = fitted.runs
        for note in fitted.notes:
            console.print(f"[cyan]{escape(note)}[/]", highlight=False)
        estimates = [estimate(k, run.plan.grad_accum, run.plan.total_steps, table) for k, run in zip(keys, planned)]
    return planned, time_table(planned, estimates, start)


def time_table(planned: list, estimates: list, start) -> Table:
    from engine.queue.estimate import Basis, finish_times, human_duration

    table = Table(title="time")
    for column in ("run", "steps", "per step", "duration", "ends", "from"):
        table.add_column(column)
    ends = finish_times(start, [e.seconds for e in estimates])
    for run, est, end in zip(planned, estimates, ends):
        table.add_row(
            escape(run.source),
            str(run.plan.total_steps),
            "-" if est.seconds_per_step is None else f"{est.seconds_per_step:.2f} s",
            "?" if est.seconds is None else f"~{human_duration(est.seconds)}",
            "?" if end is None else f"{end:%H:%M}",
            str(est.basis),
        )
    if ends and ends[-1] is not None:
        table.caption = f"the queue ends about {ends[-1]:%H:%M} (sample images and saves not counted)"
    else:
        table.caption = "not measured yet: each run measures itself as it trains, or add --measure to measure now"
    if any(e.basis == Basis.SCALED for e in estimates):
        table.caption += "; 'estimate, not measured yet': scaled from a measured resolution or batch"
    return table


def ask_finish_by(texts: dict[str, Any]) -> str | None:
    """The wizard's last question before training: a clock time, or nothing for no limit."""
    import questionary

    from engine.errors import ConfigError
    from engine.queue.budget import now, parse_finish_by

    ui = texts["budget"]

    def validate(typed: str) -> bool | str:
        if not typed.strip():
            return True
        try:
            parse_finish_by(typed, now())
        except ConfigError:
            return ui["bad_time"]
        return True

    answer = questionary.text(ui["finish_by"], validate=validate).unsafe_ask().strip()
    return answer or None
