"""TOML configs: sd-scripts' `--config_file` and `--dataset_config` files, and LETS' saved TOML.

Each becomes the same flat dict of sd-scripts option names that a flat JSON file is, so the one
key table (engine/config/flat_keys.py) maps them all:

* sd-scripts training TOML: its options at the top level or one table down; table names do not
  matter (library/train_util.py `read_config_from_file` merges the tables). `dataset_config` names a
  dataset TOML, read relative to the training file.
* sd-scripts dataset TOML: `[general]` and `[[datasets]]` with `[[datasets.subsets]]`
  (engine/config/dataset_toml.py). It holds no model or training settings, so it is not a config
  by itself: the training file that names it is.
* LETS TOML (the 2023-05 Qt GUI onward, main_ui_files/MainUI.py `save_toml`): tables whose `args`
  hold sd-scripts options and whose `dataset_args` hold dataset options, plus `[[subsets]]`. LETS
  passed no false, 0 or empty value on (modules/validator.py), so those are left out here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from engine.config.dataset_toml import (
    DatasetSettings,
    read_dataset_tables,
    read_lets_subsets,
)
from engine.config.flat_keys import flat_key_paths
from engine.config.sources import SourceFormat
from engine.errors import ConfigError
from engine.fileio import read_config_text
from engine.problems import render

#: the table lora-wizard's export writes its own settings into, by config field name
OWN_TABLE = "lora_wizard"


@dataclass
class FlatFile:
    """A file read as flat option names, with what it lists beyond them."""

    flat: dict[str, Any]
    source_format: SourceFormat
    subsets: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    own: dict[str, Any] = field(default_factory=dict)  # config fields by dotted name ([lora_wizard])


def read_toml(path: Path) -> dict[str, Any]:
    """The file's tables; a syntax error names the line and column, with the usual fix."""
    text = read_config_text(path, ".toml file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}{_backslash_hint(text, str(exc))}") from None


def _backslash_hint(text: str, message: str) -> str:
    """Windows paths in "double quotes" are the usual cause: there a backslash starts an escape."""
    line = _line_of(message)
    shown = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else text
    if "\\" not in shown:
        return ""
    return (
        "; a backslash in \"double quotes\" starts an escape in TOML: write Windows paths in 'single quotes' "
        "(C:\\data stays as written there), or double each backslash, or use forward slashes"
    )


def _line_of(message: str) -> int | None:
    marker = "line "
    if marker not in message:
        return None
    digits = message.split(marker, 1)[1].split(",")[0].split(")")[0].strip()
    return int(digits) if digits.isdigit() else None


def is_lets_toml(data: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and ("args" in v or "dataset_args" in v) for v in data.values())


def is_dataset_toml(data: dict[str, Any]) -> bool:
    return "datasets" in data and isinstance(data["datasets"], list)


def read_toml_config(path: Path) -> FlatFile:
    """A training TOML (sd-scripts' or LETS') as flat option names, its dataset TOML read in."""
    path = Path(path)
    data = read_toml(path)
    if is_dataset_toml(data):
        raise ConfigError(
            f"{path}: this is a dataset TOML (sd-scripts' --dataset_config): it names no model or training "
            "settings; load the training TOML that names it with dataset_config = \"...\""
        )
    if is_lets_toml(data):
        return _lets_toml(data, path)
    flat: dict[str, Any] = {}
    own = data.pop(OWN_TABLE, None) or {}
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: {OWN_TABLE} must be a table")
    for key, value in data.items():
        # sd-scripts merges one level of tables into the top level, whatever their names
        if isinstance(value, dict) and key not in ("network_args", "optimizer_args", "lr_scheduler_args"):
            flat.update(value)
        else:
            flat[key] = value
    result = FlatFile(flat, SourceFormat.SD_SCRIPTS_TOML, own=own)
    if flat.get("dataset_config"):
        return with_dataset_config(result, path.parent, str(path))
    return result


def with_dataset_config(result: FlatFile, base: Path, source: str) -> FlatFile:
    """Read the dataset TOML the file names (relative paths from `base`) into `result`: sd-scripts
    then ignores train_data_dir and reg_data_dir, and so does the import."""
    name = str(result.flat.pop("dataset_config"))
    dataset_path = Path(name).expanduser()
    if not dataset_path.is_absolute():
        dataset_path = base / dataset_path
    if not dataset_path.is_file():
        raise ConfigError(f"{source}: dataset_config = {name!r}: no such file ({dataset_path}); fix the path")
    settings = read_dataset_tables(read_toml(dataset_path), str(dataset_path), result.flat)
    return _merge(result, settings, f"dataset_config {dataset_path}")


def _lets_toml(data: dict[str, Any], path: Path) -> FlatFile:
    flat: dict[str, Any] = {}
    dataset_args: dict[str, Any] = {}
    subsets = data.get("subsets") or []
    for key, value in data.items():
        if key in ("subsets", "train_mode") or not isinstance(value, dict):
            continue
        for name, arg in (value.get("args") or {}).items():
            if arg:
                flat[name] = arg
        dataset_args.update(value.get("dataset_args") or {})
    result = FlatFile(flat, SourceFormat.LETS_TOML)
    if not isinstance(subsets, list):
        raise ConfigError(f"{path}: subsets must be an array of tables ([[subsets]])")
    return _merge(result, read_lets_subsets(subsets, dataset_args, str(path), flat), str(path))


def _merge(result: FlatFile, settings: DatasetSettings, source: str) -> FlatFile:
    if settings.problems:
        lines = [render(p) for p in settings.problems]
        raise ConfigError(f"{source}: {lines[0]}" if len(lines) == 1 else f"{source} ({len(lines)} problems):\n" + "\n".join(f"  - {x}" for x in lines))
    flat = dict(result.flat)
    for key in ("train_data_dir", "reg_data_dir", "img_folder", "reg_img_folder"):
        if flat.pop(key, None):
            result.notes.append(f"{key} is ignored: the dataset TOML lists the folders (as sd-scripts does)")
    for key, value in settings.flat.items():
        # the dataset's value wins over the training file's key for the same field
        for other in [k for k in flat if k != key and flat_key_paths(k) and flat_key_paths(k) == flat_key_paths(key)]:
            del flat[other]
        flat[key] = value
    result.flat = flat
    result.subsets = settings.subsets
    result.notes += settings.notes
    return result

