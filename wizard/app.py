"""The command line: the wizard, `demo`, `replay` and `queue`, with exit codes a script can trust.

    0  every run trained          1  a run failed while training
    2  bad input (config, path, dataset), reported before any training starts
    130  cancelled by the user

A user's mistake is a LoraWizardError: its message is printed, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-wizard",
        description="Train kohya-format LoRAs for Stable Diffusion. With no command, the wizard asks its questions.",
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="train the built-in demo model on the sample dataset, no questions")
    demo.add_argument("--output", type=Path, help="output folder (default: output)")
    replay = sub.add_parser("replay", help="train a saved config JSON, no questions")
    replay.add_argument("config", type=Path)
    replay.add_argument("--output", type=Path, help="output folder instead of the config's saving.output_folder")
    replay.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")
    queue = sub.add_parser("queue", help="train several configs in order")
    queue.add_argument("configs", type=Path, nargs="*")
    queue.add_argument("--folder", type=Path, help="train every *.json in this folder, in name order")
    queue.add_argument("--output", type=Path, help="output folder for every run")
    queue.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    console = Console(soft_wrap=True)  # paths and messages stay on one line, so they can be copied
    args = build_parser().parse_args(argv)
    from engine.errors import LoraWizardError

    try:
        if args.command is None:
            return _interactive(console)
        runs = _collect_runs(args)
        return _train_runs(console, runs, dry_run=getattr(args, "dry_run", False))
    except LoraWizardError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]stopped.[/]")
        return EXIT_CANCELLED


def _collect_runs(args) -> list[tuple[str, object]]:
    from engine.config import TrainConfig
    from engine.config_io import load_config
    from engine.errors import ConfigError, LoraWizardError, problems_message

    if args.command == "demo":
        cfg = TrainConfig()
        if args.output:
            cfg.saving.output_folder = args.output
        return [("demo", cfg)]
    if args.command == "replay":
        paths = [args.config]
    else:
        paths = list(args.configs)
        if args.folder:
            if not args.folder.is_dir():
                raise ConfigError(f"--folder {args.folder}: not a folder")
            paths += sorted(args.folder.glob("*.json"))
        if not paths:
            raise ConfigError("queue: name config files, or --folder DIR holding them")
    runs, problems = [], []
    for path in paths:
        try:
            cfg = load_config(path)
        except LoraWizardError as exc:
            problems.append(str(exc))
            continue
        if args.output:
            cfg.saving.output_folder = args.output
        runs.append((path.name, cfg))
    if problems:
        raise ConfigError(problems_message("nothing was trained, fix these first", problems))
    return runs


def _interactive(console: Console) -> int:
    from wizard.flow import WizardCancelled, run_interactive

    try:
        outcome = run_interactive(console)
    except WizardCancelled:
        return EXIT_CANCELLED
    if outcome.action != "train":
        return EXIT_OK
    return _train_runs(console, [("wizard", cfg) for cfg in outcome.configs], dry_run=False)


def plan_table(planned) -> Table:
    table = Table(title="plan")
    for column in ("run", "images x repeats", "reg", "buckets", "batch (effective)", "steps/epoch", "epochs", "steps", "output"):
        table.add_column(column)
    for run in planned:
        p, cfg = run.plan, run.config
        table.add_row(
            run.source,
            str(p.num_train_images),
            str(p.num_reg_images),
            ", ".join(f"{w}x{h}:{n}" for (w, h), n in p.bucket_counts.items()),
            f"{p.batch_size} ({p.effective_batch})",
            str(p.steps_per_epoch),
            str(p.epochs),
            str(p.total_steps),
            f"{cfg.saving.output_folder}/run<N>/{cfg.saving.output_name or 'last'}.{cfg.saving.save_model_as.value}",
        )
    return table


def _train_runs(console: Console, runs, *, dry_run: bool) -> int:
    from engine.events import StopSignal
    from engine.errors import LoraWizardError, TrainingError
    from engine.runner import preflight, run_one
    from wizard.progress import RichReporter

    planned = preflight(runs)
    console.print(plan_table(planned))
    if dry_run:
        return EXIT_OK
    stop = StopSignal()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        if stop.requested:  # second press: leave now
            raise KeyboardInterrupt
        console.print("[yellow]stopping after this step and saving (press Ctrl-C again to quit at once)[/]")
        stop.request()

    signal.signal(signal.SIGINT, on_interrupt)
    results, code = [], EXIT_OK
    try:
        for run in planned:
            console.rule(f"[bold]{run.source}")
            reporter = RichReporter(console)
            try:
                result = run_one(run, reporter, stop)
            except TrainingError as exc:
                reporter.close()
                console.print(f"[red]run failed:[/] {exc}")
                code = EXIT_RUN_FAILED
                continue
            except LoraWizardError:
                reporter.close()
                raise
            finally:
                reporter.close()
            results.append((run.source, result))
            lora = next((f for f in result.files if f.suffix in (".safetensors", ".ckpt", ".pt")), None)
            console.print(f"[green]{result.status}[/]: {result.steps}/{result.total_steps} steps in {result.seconds:.1f} s")
            for f in result.files:
                console.print(f"  {f}")
            if lora is not None and result.status == "done":
                console.print(f"LoRA: [bold]{result.files[-1]}[/]  config: {result.files[0]}")
            if stop.requested:
                code = EXIT_CANCELLED
                break
    finally:
        signal.signal(signal.SIGINT, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
