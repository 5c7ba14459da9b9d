"""The engine's reporter, rendered with rich: phases, notices, a bar for latent and caption caching,
and a bar for the steps with the loss, the learning rate and the speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.events import Phase, RunResult, StepStats

#: the columns the step bar's text takes besides the bar, with and without the elapsed time
WIDE, NARROW = 100, 76


def speed_text(steps_per_second: float | None) -> str:
    """"2.50 it/s", or under one step a second "25.0 s/it": a slow run reads better in seconds
    per step than in hundredths of a step per second."""
    if not steps_per_second:
        return "- it/s"
    if steps_per_second < 1:
        return f"{1 / steps_per_second:.1f} s/it"
    return f"{steps_per_second:.2f} it/s"


def lr_text(lr: float) -> str:
    return f"{lr:.2e}" if lr else "0"


class RichReporter:
    """Implements engine.events.Reporter for a terminal. `texts` is prompts' [progress] table.
    Remembers the first and last loss it showed (the summary's "loss from ... to ...")."""

    def __init__(self, console: Console, texts: dict[str, str]) -> None:
        self.console = console
        self.texts = texts
        self.bar: Progress | None = None
        self.task: Any = None
        self.caching: Phase | None = None  # the caching phase the bar shows, if any
        self.first_loss: float | None = None
        self.last_loss: float | None = None

    def notice(self, message: str) -> None:
        self.console.print(f"[yellow]{escape(self.texts['note'])}[/] {escape(message)}", highlight=False)

    def phase(self, name: Phase) -> None:
        self.close()
        if name != Phase.TRAINING:
            self.console.print(f"[dim]{escape(self.texts['phases'][name.name.lower()])}[/]", highlight=False)

    def progress(self, phase: Phase, done: int, total: int) -> None:
        if self.caching != phase:
            self.close()
            self.caching = phase
            self.bar = Progress(
                TextColumn(f"[bold]{escape(self.texts['caching'])}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,  # the phase line above it stays; the bar is gone once done
            )
            self.bar.start()
            self.task = self.bar.add_task(phase.value, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def started(self, total_steps: int, total_epochs: int) -> None:
        self.close()
        t = self.texts
        # one line at any width (a cell squeezed by rich would end in "…"): below 100 columns the
        # elapsed time and the word before the time left go, and the bar takes what is left
        wide = self.console.width >= WIDE
        columns = [
            TextColumn(f"[bold]{escape(t['training'])}"),
            BarColumn(bar_width=max(4, min(40, self.console.width - (WIDE if wide else NARROW)))),
            MofNCompleteColumn(),
            TextColumn(escape(t["epoch"]) + " {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn(escape(t["loss"]) + " {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[rate]}"),
            *([TimeElapsedColumn(), TextColumn(escape(t["eta"]))] if wide else []),
            TimeRemainingColumn(),
        ]
        self.bar = Progress(*columns, console=self.console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total_steps, epoch=1, epochs=total_epochs, loss="-", lr="-", rate="- it/s")

    def step(self, stats: StepStats) -> None:
        if stats.loss is not None:
            self.first_loss = stats.loss if self.first_loss is None else self.first_loss
            self.last_loss = stats.loss
        if self.bar is None or self.caching is not None:
            return
        task = self.bar.tasks[0]
        self.bar.update(
            self.task,
            completed=stats.step,
            epoch=stats.epoch,
            loss="-" if stats.loss is None else f"{stats.loss:.4f}",
            lr=lr_text(stats.lr),
            rate=speed_text(task.speed),
        )

    def saved(self, path: Path) -> None:
        self.console.print(f"{escape(self.texts['saved'])} [green]{escape(str(path))}[/]", highlight=False)

    def finished(self, result: RunResult) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        self.caching = None
