"""The command line: the wizard, `demo`, `replay`, `queue`, `export` and `dataset`, with exit codes a script can trust.

    0  every run trained          1  a run failed while training
    2  bad input (config, path, dataset), reported before any training starts
    130  cancelled by the user

`queue --skip-invalid` trains the valid configs of a queue with invalid ones; it ends with 1 when
a run failed while training, else 2 when a config was invalid (skipped), else 0.

A user's mistake is a LoraWizardError: its message is printed, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.events import Outcome, RunStatus
from wizard import report_cmd, sweep_cmd, time_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-wizard",
        description="Train kohya-format LoRAs for Stable Diffusion. With no command, the wizard asks its questions.",
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="train the built-in demo model on the sample dataset, no questions")
    demo.add_argument("--output", type=Path, help="output folder (default: output)")
    time_cmd.add_arguments(demo)
    report_cmd.add_arguments(demo)
    replay = sub.add_parser("replay", help="train a saved config JSON, no questions")
    replay.add_argument("config", type=Path)
    replay.add_argument("--output", type=Path, help="output folder instead of the config's saving.output_folder")
    replay.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")
    sweep_cmd.add_arguments(replay)
    time_cmd.add_arguments(replay)
    report_cmd.add_arguments(replay)
    queue = sub.add_parser(
        "queue",
        help="train several configs in order, checked first; recorded in a journal so --resume carries on after a crash",
    )
    queue.add_argument("configs", type=Path, nargs="*")
    queue.add_argument(
        "--folder", type=Path, help="train every *.json in this folder, in name order; finished ones move to complete/, failed ones to failed/"
    )
    queue.add_argument("--output", type=Path, help="output folder for every run")
    queue.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")
    time_cmd.add_arguments(queue)
    report_cmd.add_arguments(queue)
    queue.add_argument(
        "--resume", action="store_true", help="carry on with the last queue (of --folder DIR, else of this folder): skip done runs, retry interrupted ones"
    )
    queue.add_argument(
        "--skip-invalid",
        action="store_true",
        help=(
            "train the valid configs even if others have problems: every problem is still listed first, and each "
            "invalid config is recorded failed in the journal (with --folder, moved to failed/ with its problems "
            "beside it). Exit code: 1 if a run failed while training, else 2 if a config was invalid, else 0. "
            "Too little free disk for the valid runs still refuses the whole queue"
        ),
    )
    export = sub.add_parser(
        "export", help="write a config as sd-scripts files: training TOML, dataset TOML and the command that trains it"
    )
    export.add_argument("config", type=Path, help="the config to export (JSON or TOML, any format that loads)")
    export.add_argument("--to", choices=["sd-scripts"], required=True, help="the tool to write files for")
    export.add_argument("folder", type=Path, help="where the files go (never over an existing file)")
    # `dataset` parses its own arguments (wizard/dataset_cmd.py): its first word may be a command
    # (tag, caption, clean, edit) or the folder to view, which argparse sub-commands cannot express
    sub.add_parser("dataset", help="see, tag, caption and clean a dataset: `dataset --help`", add_help=False)
    return parser


def main(argv: list[str] | None = None, *, trainer=None) -> int:
    """The command line. `trainer` replaces what trains a planned run (tests pass a fake;
    engine.queue.runner.default_trainer otherwise)."""
    from engine.errors import LoraWizardError
    from engine.run.distributed import is_main_process

    # paths and messages stay on one line, so they can be copied; with several processes
    # (accelerate launch) only the main one shows plans and progress
    console = Console(soft_wrap=True, quiet=not is_main_process())
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv[:1] if argv[:1] == ["dataset"] else argv)

    try:
        if args.command == "dataset":
            from wizard.dataset_cmd import run_dataset

            return run_dataset(console, argv[1:])
        if args.command is None:
            return _interactive(console, trainer)
        if args.command == "queue":
            return _queue(console, args, trainer)
        if args.command == "export":
            return _export(console, args)
        sweep_cmd.refuse_name_without_sweep(args)
        if sweep_cmd.wants_sweep(args):
            return sweep_cmd.run_sweep(console, args, trainer, train_runs=_train_runs, queue=_queue)
        runs = _collect_runs(args)
        return _train_runs(
            console, runs, trainer, dry_run=getattr(args, "dry_run", False), timing=time_cmd.options(args), report=report_cmd.wanted(args)
        )
    except LoraWizardError as exc:
        # errors are shown by every process: the failing one may not be the main one
        errors = console if is_main_process() else Console(stderr=True, soft_wrap=True)
        errors.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]stopped.[/]")
        return Outcome.CANCELLED


def _collect_runs(args) -> list[tuple[str, object]]:
    """demo and replay: one config, no journal."""
    from engine.queue.policy import demo_config

    if args.command == "demo":
        return [("demo", demo_config(args.output))]
    return sweep_cmd.changed_runs(args)


def _export(console: Console, args) -> int:
    from engine.config.export_files import export_config
    from engine.config.io import load_config

    done = export_config(load_config(args.config), args.folder, args.config.stem)
    for path in (done.training_toml, done.dataset_toml, done.prompts):
        if path is not None:
            console.print(f"wrote {escape(str(path))}", highlight=False)
    for note in done.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(f"train it with sd-scripts (from its folder):\n{escape(done.command)}", highlight=False)
    return Outcome.OK


def _interactive(console: Console, trainer) -> int:
    from prompts import load_prompts
    from wizard.flow import WizardCancelled, run_interactive

    try:
        outcome = run_interactive(console)
    except WizardCancelled:
        return Outcome.CANCELLED
    if outcome.action != "train":
        return Outcome.OK
    timing = time_cmd.TimeOptions(finish_by=time_cmd.ask_finish_by(load_prompts("en")))
    return _train_runs(console, [("wizard", cfg) for cfg in outcome.configs], trainer, dry_run=False, timing=timing)


def plan_table(planned) -> Table:
    from engine.queue.journal import forecast_run_dirs
    from engine.queue.preflight import human_size

    table = Table(title="plan")
    for column in ("run", "images x repeats", "reg", "buckets", "batch (effective)", "steps/epoch", "epochs", "steps", "output", "disk"):
        table.add_column(column)
    for run, run_dir in zip(planned, forecast_run_dirs(planned)):
        p, cfg = run.plan, run.config
        extra = run.saves - 1
        saves = f" (+{extra} earlier save{'s' if extra > 1 else ''})" if extra else ""
        table.add_row(
            escape(run.source),
            str(p.num_train_images),
            str(p.num_reg_images),
            ", ".join(f"{w}x{h}:{n}" for (w, h), n in p.bucket_counts.items()),
            f"{p.batch_size} ({p.effective_batch})",
            str(p.steps_per_epoch),
            str(p.epochs),
            str(p.total_steps),
            escape(f"{run_dir}/{cfg.saving.output_name or 'last'}.{cfg.saving.save_model_as.value}{saves}"),
            f"~{human_size(run.output_bytes)}",
        )
    return table


def _show_plan(console: Console, planned) -> None:
    """Lint warnings (each once, with the runs it concerns), then the plan table."""
    runs_of: dict[str, list[str]] = {}
    for run in planned:
        for warning in run.warnings:
            runs_of.setdefault(warning, []).append(run.source)
    for warning, sources in runs_of.items():
        console.print(f"[yellow]note:[/] {escape(', '.join(sources))}: {escape(warning)}", highlight=False)
    console.print(plan_table(planned))


def _train_runs(
    console: Console, runs, trainer, *, dry_run: bool, timing: time_cmd.TimeOptions | None = None, report: bool = True
) -> int:
    """demo, replay and the wizard's runs: checked together, trained in order, no journal."""
    from engine.queue.policy import in_memory_queue
    from engine.queue.preflight import preflight
    from engine.run.distributed import launched_processes

    planned = preflight(runs, launched_processes())  # the step count of the process count launched
    planned, times = time_cmd.timed(console, planned, timing or time_cmd.TimeOptions())  # estimates; --finish-by picks the epochs
    _show_plan(console, planned)
    console.print(times)
    if dry_run:
        return Outcome.OK
    journal, queued = in_memory_queue(planned)
    return _execute(console, journal, queued, trainer, resume_hint=None, report=report)


def _queue(console: Console, args, trainer) -> int:
    """`queue CONFIG... | --folder DIR [--resume] [--dry-run]`: every run checked before the first
    starts, each state recorded in the journal (see engine/queue/journal.py)."""
    from engine.errors import problems_message
    from engine.queue.journal import journal_path, open_queue, queue_lock
    from engine.queue.policy import check_queue

    path = journal_path(args.folder)
    with queue_lock(path):
        setup = open_queue(path, args.folder, args.configs, resume=args.resume, output=args.output)
        journal = setup.journal
        for note in setup.notes:
            console.print(f"[dim]{escape(note)}[/]", highlight=False)
        output = None if journal.output is None else Path(journal.output)
        checked = check_queue(setup.todo, output, skip_invalid=args.skip_invalid)
        if checked.invalid:
            then = "dry run, nothing is recorded" if args.dry_run else "they are recorded failed and the others train"
            title = f"{checked.title} (--skip-invalid: {then})"
            console.print(f"[red]error:[/] {escape(problems_message(title, checked.problems))}", highlight=False)
        planned, times = time_cmd.timed(console, [run for _, run in checked.runs], time_cmd.options(args))
        checked.runs = [(entry, run) for (entry, _), run in zip(checked.runs, planned)]
        if planned:
            _show_plan(console, planned)
            console.print(times)
        if args.dry_run:
            return Outcome.BAD_INPUT if checked.invalid else Outcome.OK
        if not planned:
            console.print("nothing left to train in this queue")
        hint = f"lora-wizard queue {f'--folder {journal.folder} ' if journal.folder else ''}--resume"
        return _execute(console, journal, checked.runs, trainer, resume_hint=hint, invalid=checked.invalid, report=report_cmd.wanted(args))


def _execute(console: Console, journal, runs, trainer, *, resume_hint: str | None, invalid=(), report: bool = True) -> int:
    """Run the queue with Ctrl-C handling, then print the summary. First Ctrl-C (or SIGTERM, as at
    shutdown): finish the step, save `<name>-interrupted`, stop the queue. Second: leave at once.
    `invalid`: (entry, problems) of runs that preflight refused (--skip-invalid), recorded failed."""
    from engine.events import StopSignal
    from engine.queue.execute import run_queue
    from engine.queue.policy import outcome
    from engine.queue.runner import default_trainer

    stop = StopSignal()

    def on_interrupt(signum, frame):
        if stop.requested:  # second press: leave now
            raise KeyboardInterrupt
        console.print("[yellow]stopping after this step and saving (press Ctrl-C again to quit at once)[/]")
        stop.request()

    previous = {sig: signal.signal(sig, on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_queue(journal, runs, _QueueConsole(console), stop, invalid, default_trainer if trainer is None else trainer, report=report)
    except KeyboardInterrupt:
        if resume_hint:
            console.print(escape(f"the queue is recorded in {journal.path}; `{resume_hint}` carries on"), highlight=False)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(summary_table(journal, {id(entry) for entry, _ in [*runs, *invalid]}))
    if stop.requested and resume_hint:
        console.print(escape(f"stopped; `{resume_hint}` carries on with the rest"), highlight=False)
    return outcome(runs, invalid, stopped=stop.requested)


class _QueueConsole:
    """engine.queue.execute.QueueListener for the terminal: a heading and a progress bar per run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.reporter = None

    def starting(self, entry, run, number: int, count: int):
        from wizard.progress import RichReporter

        counter = f" ({number}/{count})" if count > 1 else ""
        self.console.rule(f"[bold]{escape(run.source)}[/]{counter}")
        self.reporter = RichReporter(self.console)
        return self.reporter

    def ended(self, entry, result) -> None:
        self.reporter.close()
        if result is None:
            colour, what = ("red", "run failed") if entry.state == "failed" else ("yellow", "interrupted")
            self.console.print(f"[{colour}]{what}:[/] {escape(entry.reason or '')}", highlight=False)
            return
        self.console.print(f"[green]{result.status}[/]: {result.steps}/{result.total_steps} steps in {result.seconds:.1f} s")
        for note in result.notes:
            self.console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        for f in result.files:
            self.console.print(f"  {escape(str(f))}", highlight=False)
        loras = [f for f in result.files if f.suffix in (".safetensors", ".ckpt", ".pt")]
        if loras and result.status == RunStatus.DONE:
            self.console.print(f"LoRA: [bold]{escape(str(loras[-1]))}[/]  config: {escape(str(result.files[0]))}", highlight=False)


def summary_table(journal, ran_now: set[int]) -> Table:
    """Every run of the queue: result, time, steps, where its files are (or why it failed)."""
    table = Table(title="queue summary" if journal.path else "summary")
    for column in ("run", "result", "time", "steps", "output"):
        table.add_column(column)
    colours = {"done": "green", "failed": "red", "interrupted": "yellow"}
    for entry in journal.entries:
        state = entry.state.value
        result = f"[{colours.get(state, 'white')}]{state}[/]" + ("" if id(entry) in ran_now else " (earlier)")
        files = [entry.run_dir or ""] + [f"  {Path(f).name}" for f in entry.files]
        output = "\n".join([*files, *([entry.reason] if entry.reason else []), *entry.notes])
        steps = f"{entry.steps}/{entry.total_steps}" if entry.total_steps else "-"
        table.add_row(escape(entry.name), result, f"{entry.seconds:.0f} s", steps, escape(output))
    return table


if __name__ == "__main__":
    sys.exit(main())
