"""What the terminal shows around training: the plan before the first run, each run's heading,
progress and result (a QueueListener), and the summary at the end with what the runs learned.

The plan and the summary are tables when they fit the terminal and a list per run when they do not
(80 columns): a cell is never cut with "…", and the run folder, whose `run<N>` is how a user finds
the files, is always printed whole. Wording: prompts/<lang>.toml's [plan], [summary], [progress].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

from engine.events import RunResult, RunStatus
from wizard.progress import RichReporter
from wizard.screen import Screen

PLAN_COLUMNS = ("run", "images", "reg", "buckets", "batch", "steps_per_epoch", "epochs", "steps", "output", "disk")
SUMMARY_COLUMNS = ("run", "result", "time", "steps", "output")
#: a table's border and padding: 3 cells a column, and 1 for the last border
_TABLE_CHROME = 3


def table_width(headers: list[str], rows: list[list[str]]) -> int:
    """The width a rich table needs to show every cell on its lines, uncut."""
    widths = [max(cell_len(line) for cell in [h, *(r[i] for r in rows)] for line in cell.split("\n")) for i, h in enumerate(headers)]
    return sum(widths) + _TABLE_CHROME * len(headers) + 1


def show_table_or_list(screen: Screen, title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A table when it fits the terminal, else each row as a list (label, value; a path whole)."""
    if table_width(headers, rows) <= screen.console.width:
        table = Table(title=title)
        for header in headers:
            table.add_column(escape(header), overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        screen.console.print(table)
        return
    screen.say(title, "bold")
    label_width = max(cell_len(h) for h in headers[1:])
    for number, row in enumerate(rows, start=1):
        screen.say(f"{number}. {row[0]}", "bold")
        for header, cell in zip(headers[1:], row[1:]):
            lines = cell.split("\n")
            pad = " " * (label_width - cell_len(header))
            screen.say(f"{header}{pad}  {lines[0]}", indent="   ", more="   " + " " * (label_width + 2))
            for line in lines[1:]:
                screen.say(line, indent="   " + " " * (label_width + 2))


# ---- the plan ---------------------------------------------------------------------------------------


def plan_rows(planned, texts: dict[str, str]) -> list[list[str]]:
    from engine.queue.journal import forecast_run_dirs
    from engine.queue.preflight import human_size

    rows = []
    for run, run_dir in zip(planned, forecast_run_dirs(planned)):
        p, cfg = run.plan, run.config
        extra = run.saves - 1
        lora = f"{run_dir}/{cfg.saving.output_name or 'last'}.{cfg.saving.save_model_as.value}"
        output = lora + ("\n" + texts["earlier_saves"].format(count=extra) if extra else "")
        rows.append([
            run.source,
            str(p.num_train_images),
            str(p.num_reg_images),
            ", ".join(f"{w}x{h}:{n}" for (w, h), n in p.bucket_counts.items()),
            f"{p.batch_size} ({p.effective_batch})",
            str(p.steps_per_epoch),
            str(p.epochs),
            str(p.total_steps),
            output,
            f"~{human_size(run.output_bytes)}",
        ])
    return rows


def show_plan(screen: Screen, planned) -> None:
    """Lint warnings (each once, with the runs it concerns), then the plan."""
    texts = screen.texts["plan"]
    runs_of: dict[str, list[str]] = {}
    for run in planned:
        for warning in run.warnings:
            runs_of.setdefault(warning, []).append(run.source)
    for warning, sources in runs_of.items():
        screen.say(f"{screen.texts['ui']['note']} {', '.join(sources)}: {warning}", "yellow")
    show_table_or_list(screen, texts["title"], [texts[c] for c in PLAN_COLUMNS], plan_rows(planned, texts))


# ---- each run ----------------------------------------------------------------------------------------


@dataclass
class Learned:
    """What a run of this session showed: its loss at the start and the end, where its logs and
    sample images are."""

    first_loss: float | None
    last_loss: float | None
    logs: Path | None
    samples: Path | None


class QueueConsole:
    """engine.queue.execute.QueueListener for the terminal: a heading and the progress of each run,
    its result, and what it learned (kept for the summary)."""

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        self.reporter: RichReporter | None = None
        self.configs: dict[int, object] = {}
        self.learned: dict[int, Learned] = {}

    def starting(self, entry, run, number: int, count: int):
        counter = f" ({number}/{count})" if count > 1 else ""
        self.screen.console.rule(f"[bold]{escape(run.source)}[/]{counter}")
        self.configs[id(entry)] = run.config
        self.reporter = RichReporter(self.screen.console, self.screen.texts["progress"])
        return self.reporter

    def ended(self, entry, result: RunResult | None) -> None:
        texts = self.screen.texts["summary"]
        self.reporter.close()
        if result is None:
            colour, what = ("red", texts["failed"]) if entry.state == "failed" else ("yellow", texts["interrupted"])
            self.screen.say(f"{what}: {entry.reason or ''}", colour)
            return
        self.learned[id(entry)] = self._learned(entry, result)
        status = texts.get(str(result.status), str(result.status))
        colour = "green" if result.status == RunStatus.DONE else "yellow"
        self.screen.say(texts["run_ended"].format(status=status, steps=result.steps, total=result.total_steps, seconds=f"{result.seconds:.1f}"), colour)
        if result.status == RunStatus.INTERRUPTED and entry.reason:
            self.screen.say(entry.reason, "yellow", "  ")
        for note in result.notes:  # what happened to the run on the way (an out-of-memory retry, the contact sheet)
            self.screen.say(f"{self.screen.texts['ui']['note']} {note}", "yellow")
        for f in result.files:
            self.screen.say(str(f), indent="  ")
        loras = [f for f in result.files if f.suffix in (".safetensors", ".ckpt", ".pt")]
        if loras and result.status == RunStatus.DONE:
            self.screen.say(texts["lora"].format(path=loras[-1]), "bold")

    def _learned(self, entry, result: RunResult) -> Learned:
        from engine.run.tracking import log_folder

        cfg = self.configs.get(id(entry))
        logs = log_folder(cfg, result.run_dir) if cfg is not None and cfg.logging.tensorboard else None
        samples = result.run_dir / "sample"
        return Learned(
            self.reporter.first_loss,
            self.reporter.last_loss,
            logs if logs is not None and logs.is_dir() else None,
            samples if samples.is_dir() else None,
        )


# ---- the summary -------------------------------------------------------------------------------------


def summary_rows(journal, ran_now: set[int], texts: dict[str, str]) -> list[list[str]]:
    rows = []
    for entry in journal.entries:
        state = texts.get(entry.state.value, entry.state.value)
        result = state if id(entry) in ran_now else f"{state} {texts['earlier']}"
        files = [entry.run_dir or ""] + [f"  {Path(f).name}" for f in entry.files]
        output = "\n".join([*files, *([entry.reason] if entry.reason else []), *entry.notes])
        steps = f"{entry.steps}/{entry.total_steps}" if entry.total_steps else "-"
        rows.append([entry.name, result, f"{entry.seconds:.0f} s", steps, output])
    return rows


def show_summary(screen: Screen, journal, ran_now: set[int], listener: QueueConsole) -> None:
    """Every run of the queue (result, time, steps, where its files are or why it failed), then
    for each run of this session the loss it started and ended at, and where to see it learn."""
    texts = screen.texts["summary"]
    title = texts["queue_title"] if journal.path else texts["title"]
    show_table_or_list(screen, title, [texts[c] for c in SUMMARY_COLUMNS], summary_rows(journal, ran_now, texts))
    for entry in journal.entries:
        learned = listener.learned.get(id(entry))
        if learned is None:
            continue
        screen.say(entry.name, "bold")
        if learned.first_loss is not None and learned.last_loss is not None:
            screen.say(texts["loss"].format(first=f"{learned.first_loss:.4f}", last=f"{learned.last_loss:.4f}"), indent="  ")
        if learned.logs is not None:
            screen.say(texts["logs"], indent="  ")
            screen.command_line(f"  tensorboard --logdir {learned.logs}")
        if learned.samples is not None:
            screen.say(texts["samples"].format(path=learned.samples), indent="  ", more="    ")
