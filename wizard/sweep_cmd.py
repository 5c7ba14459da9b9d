"""`replay CFG.json --set path=value --sweep path=v1,v2 [--name TEMPLATE]`: a changed config, or
the grid of a sweep. The grid's configs are written into a fresh sweep folder beside the config and
trained as a folder queue, with the journal (`queue --folder DIR --resume` carries on); with
`--dry-run` nothing is written and the grid's plan is shown. The expansion is
engine/queue/sweep.py's; this module only reads the options and hands the runs on."""

from __future__ import annotations

import argparse
from pathlib import Path

from wizard import report_cmd, time_cmd
from wizard.screen import Screen


def add_arguments(replay: argparse.ArgumentParser) -> None:
    replay.add_argument(
        "--set", action="append", default=[], metavar="PATH=VALUE",
        help="change a field, e.g. --set network.dim=16 (JSON values: 16, 1e-4, true, [512,768]; else text)",
    )
    replay.add_argument(
        "--sweep", action="append", default=[], metavar="PATH=V1,V2",
        help="train one run per value (several --sweep: every combination), queued in a sweep folder beside the config",
    )
    replay.add_argument(
        "--name", default=None, metavar="TEMPLATE",
        help="each sweep run's output_name: {name} (the config's), {changes} (field=value-...), {index}, {<field>} "
        "(default: {name}-{changes})",
    )


def changed_runs(args) -> list[tuple[str, object]]:
    """`replay CFG --set ...` without a sweep: the one config, changed and validated."""
    from engine.queue.policy import load_one
    from engine.queue.sweep import apply_changes, parse_sets

    (source, cfg), = load_one(args.config, args.output)
    sets = parse_sets(args.set)
    if not sets:
        return [(source, cfg)]
    return [(source, apply_changes(cfg, sets, f"{args.config} with --set"))]


def run_sweep(screen: Screen, args, trainer) -> int:
    """Expand the grid; show it (dry run) or write it as a folder and train it as a queue."""
    from engine.queue.policy import load_one
    from engine.queue.sweep import (
        DEFAULT_TEMPLATE,
        apply_changes,
        base_name_of,
        expand,
        parse_sets,
        parse_sweeps,
        sweep_folder,
        write_grid,
    )
    from wizard.runs import queue_command, train_runs

    (_, cfg), = load_one(args.config, args.output)
    sets = parse_sets(args.set)
    named = apply_changes(cfg, sets, f"{args.config} with --set") if sets else cfg  # a --set output_name names the grid
    points = expand(
        cfg, sets, parse_sweeps(args.sweep), base_name=base_name_of(named, args.config), template=args.name or DEFAULT_TEMPLATE
    )
    screen.say(f"sweep of {args.config}: {len(points)} run{'s' if len(points) != 1 else ''}")
    timing = time_cmd.options(args)
    if args.dry_run:
        code = train_runs(screen, [(p.name, p.config) for p in points], trainer, dry_run=True, timing=timing)
        screen.say(f"dry run: nothing written; without --dry-run the runs are queued in {Path(args.config).stem}-sweep-<time>/ beside the config")
        return code
    folder = sweep_folder(args.config)
    write_grid(points, folder)
    screen.say(f"the sweep's configs are in {folder}; this carries on after a stop:")
    screen.command_line(f"{screen.command} queue --folder {folder} --resume")
    return queue_command(
        screen, folder, [], resume=False, output=None, dry_run=False, skip_invalid=False, trainer=trainer,
        timing=timing, report=report_cmd.wanted(args),
    )


def wants_sweep(args) -> bool:
    return getattr(args, "command", None) == "replay" and bool(getattr(args, "sweep", None))


def refuse_name_without_sweep(args) -> None:
    from engine.errors import ConfigError

    if getattr(args, "command", None) == "replay" and args.name and not args.sweep:
        raise ConfigError("--name names the runs of a --sweep; give --sweep PATH=V1,V2 too")

