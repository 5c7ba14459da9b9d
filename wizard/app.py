"""The command line: the wizard, `demo`, `replay`, `queue`, `export` and `dataset`, with exit codes a script can trust.

    0  every run trained          1  a run failed while training
    2  bad input (config, path, dataset), reported before any training starts
    130  cancelled by the user

`queue --skip-invalid` trains the valid configs of a queue with invalid ones; it ends with 1 when
a run failed while training, else 2 when a config was invalid (skipped), else 0.

`--lang en|zh|ja` (or the locale: LANG=zh_CN.UTF-8) picks the language of everything the wizard
says (wizard/lang.py); the engine's own messages (the rulebook's problems, which name config
fields) stay English. Hints name the command the user typed (`python run_wizard.py`, or
`lora-wizard`). A user's mistake is a LoraWizardError: its message is printed, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console

from engine.events import Outcome
from engine.quiet import quiet_heavy_imports
from prompts import load_prompts
from wizard import report_cmd, sweep_cmd, time_cmd
from wizard.lang import LANGUAGES, pick_language
from wizard.screen import Screen


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--lang", choices=LANGUAGES, default=argparse.SUPPRESS,
        help="language of the wizard: en, zh (简体中文), ja (日本語); default: the locale's (LANG), else en",
    )
    parser = argparse.ArgumentParser(
        prog="lora-wizard",
        description="Train kohya-format LoRAs for Stable Diffusion. With no command, the wizard asks its questions.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", parents=[common], help="train the built-in demo model on the sample dataset, no questions")
    demo.add_argument("--output", type=Path, help="output folder (default: output)")
    time_cmd.add_arguments(demo)
    report_cmd.add_arguments(demo)
    replay = sub.add_parser("replay", parents=[common], help="train a saved config JSON, no questions")
    replay.add_argument("config", type=Path)
    replay.add_argument("--output", type=Path, help="output folder instead of the config's saving.output_folder")
    replay.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")
    sweep_cmd.add_arguments(replay)
    time_cmd.add_arguments(replay)
    report_cmd.add_arguments(replay)
    queue = sub.add_parser(
        "queue", parents=[common],
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
        "--resume", action="store_true",
        help=(
            "carry on with the last queue (of --folder DIR, else the one started from this folder, the wizard's "
            "runs included): skip done runs, retry interrupted ones"
        ),
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
        "export", parents=[common],
        help="write a config as sd-scripts files: training TOML, dataset TOML and the command that trains it",
    )
    export.add_argument("config", type=Path, help="the config to export (JSON or TOML, any format that loads)")
    export.add_argument("--to", choices=["sd-scripts"], required=True, help="the tool to write files for")
    export.add_argument("folder", type=Path, help="where the files go (never over an existing file)")
    # `dataset` parses its own arguments (wizard/dataset_cmd.py): its first word may be a command
    # (tag, caption, clean, edit) or the folder to view, which argparse sub-commands cannot express
    sub.add_parser("dataset", help="see, tag, caption and clean a dataset: `dataset --help`", add_help=False)
    return parser


def parse_command_line(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the arguments of `dataset` (parsed by its own parsers)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "dataset":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, rest


def command_name(argv0: str | None = None) -> str:
    """How the user started lora-wizard, for the hints that name a command: `python run_wizard.py`
    (with the interpreter as it can be typed here), or the `lora-wizard` script."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).name != "run_wizard.py":
        return "lora-wizard"
    return f"{python_command()} {argv0}"


def python_command() -> str:
    """`python` when that is this interpreter, else its path (relative when under this folder)."""
    me = Path(sys.executable).resolve()
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and Path(found).resolve() == me:
            return name
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def main(argv: list[str] | None = None, *, trainer=None, program: str | None = None) -> int:
    """The command line. `trainer` replaces what trains a planned run (tests pass a fake;
    engine.queue.runner.default_trainer otherwise); `program` the command hints name."""
    quiet_heavy_imports()  # before anything imports huggingface_hub or bitsandbytes (preflight does)
    from engine.errors import LoraWizardError
    from engine.run.distributed import is_main_process

    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = parse_command_line(argv)
    lang = pick_language(getattr(args, "lang", None))
    # soft_wrap: a line is never cropped; `Screen.say` wraps prose itself, in a terminal, and keeps
    # paths whole. With several processes (accelerate launch) only the main one shows plans and progress.
    console = Console(soft_wrap=True, quiet=not is_main_process())
    screen = Screen(console, load_prompts(lang), program or command_name(), lang, wrap_prose=console.is_terminal)
    try:
        if args.command == "dataset":
            from wizard.dataset_cmd import run_dataset

            return run_dataset(console, rest, screen.texts, screen.command)
        if args.command is None:
            from wizard.wizard_cmd import run_wizard

            return run_wizard(screen, trainer)
        if args.command == "queue":
            from wizard.runs import queue_command

            return queue_command(
                screen, args.folder, args.configs, resume=args.resume, output=args.output,
                dry_run=args.dry_run, skip_invalid=args.skip_invalid, trainer=trainer,
                timing=time_cmd.options(args), report=report_cmd.wanted(args),
            )
        if args.command == "export":
            return export_command(screen, args)
        sweep_cmd.refuse_name_without_sweep(args)
        if sweep_cmd.wants_sweep(args):
            return sweep_cmd.run_sweep(screen, args, trainer)
        from wizard.runs import train_runs

        return train_runs(
            screen, collect_runs(args), trainer, dry_run=getattr(args, "dry_run", False),
            timing=time_cmd.options(args), report=report_cmd.wanted(args),
        )
    except LoraWizardError as exc:
        # errors are shown by every process: the failing one may not be the main one
        errors = screen if is_main_process() else Screen(Console(stderr=True, soft_wrap=True), screen.texts)
        errors.say(f"{screen.texts['ui']['error']} {exc}", "red")
        return exc.exit_code
    except KeyboardInterrupt:
        screen.say(screen.texts["ui"]["stopped"], "yellow")
        return Outcome.CANCELLED


def collect_runs(args) -> list[tuple[str, object]]:
    """demo and replay: one config, no journal."""
    from engine.queue.policy import demo_config

    if args.command == "demo":
        return [("demo", demo_config(args.output))]
    return sweep_cmd.changed_runs(args)


def export_command(screen: Screen, args) -> int:
    """`export CFG --to sd-scripts FOLDER`: the files sd-scripts trains the same run from."""
    from engine.config.export_files import export_config
    from engine.config.io import load_config

    done = export_config(load_config(args.config), args.folder, args.config.stem)
    for path in (done.training_toml, done.dataset_toml, done.prompts):
        if path is not None:
            screen.say(f"wrote {path}")
    for note in done.notes:
        screen.say(f"{screen.texts['ui']['note']} {note}", "yellow")
    screen.say("train it with sd-scripts (from its folder):")
    screen.command_line(done.command)
    return Outcome.OK


if __name__ == "__main__":
    sys.exit(main())
