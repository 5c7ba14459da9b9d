"""Sweeps from one config: `--set path=value` changes a field, `--sweep path=v1,v2` tries each
value, and several sweeps make the grid of every combination.

    changes = parse_sets(["network.dim=16"])                  # [Change("network.dim", 16, "16")]
    sweeps = parse_sweeps(["optim.unet_lr=1e-4,2e-4", "network.dim=8,16"])
    grid = expand(cfg, changes, sweeps, template=DEFAULT_TEMPLATE, base_name="mychar")
    folder = write_grid(grid, next_to=Path("mychar.json"))   # one config file per point

A value is read as JSON where it is JSON (`16`, `1e-4`, `true`, `null`, `[512, 768]`) and as text
otherwise (`AdamW`), and each changed config is validated as a loaded file is (engine/config/io.py),
so a bad value is a named problem of that field. The grid is written as config files, one per point,
into a fresh sweep folder next to the config: a folder queue (`queue --folder`) trains it, with the
journal, so `--resume` carries on after a crash. Each point is named by a template from the fields
it changes (default `<output_name>-<field>=<value>...`); the names are its LoRA's output_name and,
numbered in grid order, its config file's name. Pure: nothing here trains or prints.
"""

from __future__ import annotations

import itertools
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.config.io import dump_config, problems_text, validated
from engine.config.schema import TrainConfig
from engine.errors import ConfigError, problems_message
from engine.fileio import atomic_write_text

DEFAULT_TEMPLATE = "{name}-{changes}"
UNSAFE = re.compile(r'[\\/:*?"<>|\s]+')  # not in a file name on Windows or macOS, or a blank
MAX_POINTS = 256  # a typo like 1,2,...,1000 should not queue a thousand runs


@dataclass(frozen=True)
class Change:
    path: str  # "network.dim", or deeper into a dict field: "optim.optimizer_args.weight_decay"
    value: Any  # as parsed
    text: str  # as written, for names

    @property
    def field(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Sweep:
    path: str
    values: tuple[Change, ...]


@dataclass(frozen=True)
class GridPoint:
    name: str  # the run's output_name (and, numbered, its config file's stem)
    changes: tuple[Change, ...]  # the swept values of this point (the --set ones are common to all)
    config: TrainConfig


# ---------------------------------------------------------------------------------------- parsing


def parse_value(text: str) -> Any:
    """JSON where the text is JSON, else the text itself (so `AdamW` needs no quotes)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_values(text: str) -> list[str]:
    """`1e-4,2e-4` -> two values; commas inside [...], {...} or quotes do not split."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "[{":
            depth += 1
        elif not quoted and char in "]}":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _split_assignment(text: str, option: str) -> tuple[str, str]:
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path or not value.strip():
        raise ConfigError(f"{option} {text!r}: write it as {option} section.field=value, e.g. {option} network.dim=16")
    return path, value.strip()


def parse_sets(items: Sequence[str]) -> list[Change]:
    """`--set path=value` options, each a Change (the last of one path wins, as on a command line)."""
    changes = {}
    for item in items:
        path, value = _split_assignment(item, "--set")
        changes[path] = Change(path, parse_value(value), value)
    return list(changes.values())


def parse_sweeps(items: Sequence[str]) -> list[Sweep]:
    """`--sweep path=v1,v2,...` options, each a Sweep of its values in the order written."""
    sweeps, seen = [], set()
    for item in items:
        path, text = _split_assignment(item, "--sweep")
        if path in seen:
            raise ConfigError(f"--sweep {path} is given twice; list all its values in one --sweep {path}=a,b,c")
        seen.add(path)
        values = [v.strip() for v in split_values(text)]
        if any(not v for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"--sweep {item!r}: each value once, none empty (e.g. {path}=8,16,32)")
        sweeps.append(Sweep(path, tuple(Change(path, parse_value(v), v) for v in values)))
    return sweeps


# -------------------------------------------------------------------------------------- applying


def apply_changes(cfg: TrainConfig, changes: Sequence[Change], source: str) -> TrainConfig:
    """The config with these fields changed, validated as a loaded config is: every problem named
    (an unknown field with the closest known ones, a bad value with what the field accepts)."""
    data = dump_config(cfg)
    for change in changes:
        _assign(data, change)
    new, problems = validated(data)
    if problems:
        raise ConfigError(problems_text(problems, source))
    return new  # type: ignore[return-value]


def _assign(data: dict, change: Change) -> None:
    *parents, leaf = change.path.split(".")
    where = data
    for part in parents:
        if not isinstance(where.get(part, {}), dict):
            raise ConfigError(f"{change.path}: {part} is not a section or an object field, so it has no {leaf}")
        where = where.setdefault(part, {})
    where[leaf] = change.value


# ------------------------------------------------------------------------------------------ grid


def expand(
    cfg: TrainConfig, sets: Sequence[Change], sweeps: Sequence[Sweep], *, base_name: str, template: str = DEFAULT_TEMPLATE
) -> list[GridPoint]:
    """Every combination of the sweeps' values (the first sweep varies slowest), each with the
    --set changes, validated and named; all problems of all points are raised together."""
    combos = list(itertools.product(*(s.values for s in sweeps)))
    if len(combos) > MAX_POINTS:
        raise ConfigError(f"the sweep makes {len(combos)} runs; at most {MAX_POINTS} are queued at once: sweep fewer values")
    fields = _field_labels([s.path for s in sweeps])
    points, problems = [], []
    for index, combo in enumerate(combos, start=1):
        name = point_name(template, base_name, combo, fields, index)
        try:
            config = apply_changes(cfg, [*sets, *combo, Change("saving.output_name", name, name)], f"sweep run {name}")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        points.append(GridPoint(name, tuple(combo), config))
    if problems:
        raise ConfigError(problems_message("the sweep cannot train", problems))
    duplicates = sorted({p.name for p in points if [q.name for q in points].count(p.name) > 1})
    if duplicates:
        raise ConfigError(f"--name {template!r} gives several runs the name {duplicates[0]}; put {{changes}} or {{index}} in it")
    return points


def _field_labels(paths: Sequence[str]) -> dict[str, str]:
    """Each swept path's label in names: its field name, or the whole path where two sweeps share
    a field name (`network.dim` and a hypothetical `other.dim`)."""
    leaves = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (leaf if leaves.count(leaf) == 1 else p) for p, leaf in zip(paths, leaves)}


def point_name(template: str, base_name: str, combo: Sequence[Change], labels: dict[str, str], index: int) -> str:
    """A point's name from the template: `{name}` the config's output name, `{changes}` its
    `field=value` pairs joined by "-", `{index}` its number in the grid, `{<field>}` one value."""
    values = {labels[c.path]: c.text for c in combo}
    fields = {
        "name": base_name,
        "changes": "-".join(f"{labels[c.path]}={c.text}" for c in combo),
        "index": f"{index:02d}",
        **values,
    }
    unknown = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None and f not in fields]
    if unknown:
        raise ConfigError(f"--name {template!r}: no placeholder {{{unknown[0]}}}; use {', '.join('{' + k + '}' for k in fields)}")
    return safe_name(template.format(**fields))


def safe_name(text: str) -> str:
    """A file name on every system: characters that are not allowed there become "_"."""
    return UNSAFE.sub("_", text).strip("._") or "sweep"


def base_name_of(cfg: TrainConfig, config_path: Path) -> str:
    return cfg.saving.output_name or Path(config_path).stem


# ----------------------------------------------------------------------------------------- files


def sweep_folder(config_path: Path, now: datetime | None = None) -> Path:
    """`<config stem>-sweep-<YYYYmmdd-HHMMSS>` beside the config (a fresh one: -2, -3 if taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    config_path = Path(config_path).resolve()
    base = config_path.with_name(f"{config_path.stem}-sweep-{stamp}")
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")


def write_grid(points: Sequence[GridPoint], folder: Path) -> list[Path]:
    """One config file per point in `folder`, `<NN>-<name>.json`, numbered so that the folder's
    name order (the order a folder queue trains in) is the grid's; atomic, never over a file."""
    written = []
    width = max(2, len(str(len(points))))
    for index, point in enumerate(points, start=1):
        text = json.dumps(dump_config(point.config), indent=2, ensure_ascii=False) + "\n"
        written.append(atomic_write_text(Path(folder) / f"{index:0{width}d}-{point.name}.json", text))
    return written
