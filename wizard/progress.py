"""The engine's reporter, rendered with rich: phases, notices, and a progress bar for the steps."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.events import Phase, RunResult, StepStats


class RichReporter:
    """Implements engine.events.Reporter for a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def notice(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}")

    def phase(self, name: Phase) -> None:
        if name != Phase.TRAINING:
            self.console.print(f"[dim]{name.value}...[/]")

    def started(self, total_steps: int, total_epochs: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, epoch=1, epochs=total_epochs, loss="-", rate="- it/s"
        )

    def step(self, stats: StepStats) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[0]
        speed = task.speed
        self.progress.update(
            self.task,
            completed=stats.step,
            epoch=stats.epoch,
            loss="-" if stats.loss is None else f"{stats.loss:.4f}",
            rate="- it/s" if not speed else f"{speed:.2f} it/s",
        )

    def saved(self, path: Path) -> None:
        self.console.print(f"saved [green]{path}[/]")

    def finished(self, result: RunResult) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
