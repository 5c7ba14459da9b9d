"""Loading and saving config files.

One pipeline for every file: read JSON -> migrate to the current version (engine/config/migrate.py)
-> drop the skip-list fields -> validate once. Every failure is a `ConfigError` that names the file, the
field, the value and the fix; a user never sees a traceback for a bad file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config import rules
from engine.config.field_messages import (
    _dotted,
    _suggest,
    describe_field,
    field_problem,
    field_problems,
)
from engine.config.flat_import import (
    SESSION_KEYS,
    flat_key_paths,
    flat_to_nested,
    is_flat_config,
)
from engine.config.migrate import MIGRATIONS, migrate, version_of  # noqa: F401 - MIGRATIONS re-exported
from engine.config.schema import (
    CONFIG_VERSION,
    DEMO_MODEL,
    SAMPLE_DATASET,
    SECTIONS,
    TrainConfig,
    field_paths,
)
from engine.config.sources import SourceFormat, json_format
from engine.config.toml_import import FlatFile, read_toml_config, with_dataset_config
from engine.errors import ConfigError, OutputExistsError
from engine.fileio import atomic_write_text, next_free_path, read_config_text
from engine.problems import Problem, errors, render

__all__ = [
    "DEFAULT_SKIP", "MIGRATIONS", "LoadedConfig", "config_from_dict", "describe_field", "dump_config", "field_problem",
    "load_config", "migrate", "read_config", "save_config", "skip_paths_for", "validate", "validated",
]

#: LETS' default `json_load_skip_list` as config fields: what "load a saved config, then ask"
#: takes from the wizard instead of the file. (LETS' other entries, save_json_folder and
#: json_load_skip_list, are session keys that no import keeps anyway.)
DEFAULT_SKIP: tuple[str, ...] = (
    "dataset.reg_img_folder",  # reg_img_folder
    "network.network_weights",  # lora_model_for_resume
    "saving.output_name",  # change_output_name
    "saving.training_comment",  # training_comment
)


@dataclass(frozen=True)
class LoadedConfig:
    config: TrainConfig
    source_version: int  # the version the file was written with (0: flat LETS/kohya, TOML or unversioned)
    notes: tuple[str, ...] = ()  # keys an import left out, and why
    source_format: SourceFormat | None = None  # the tool that wrote an imported file (None: ours)


# ----------------------------------------------------------------------------------------- load


def load_config(path: Path, skip: Iterable[str] | None = None) -> TrainConfig:
    """Read a config file (ours of any version, or a LETS/kohya_ss flat JSON) into a TrainConfig.

    `skip` names fields to leave at their defaults (dotted paths like "dataset.reg_img_folder", or
    LETS key names like "reg_img_folder"); pass `DEFAULT_SKIP` for LETS' "load, then ask" behaviour.
    """
    return read_config(path, skip).config


def read_config(path: Path, skip: Iterable[str] | None = None) -> LoadedConfig:
    """`load_config`, plus the version the file had and the import notes (for the wizard to show).

    A `.toml` file is an sd-scripts training TOML or a LETS TOML; a flat JSON file a LETS or kohya_ss
    GUI file; either may name a dataset TOML (`dataset_config`), read relative to the file.
    """
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return _build_flat(read_toml_config(path), str(path), skip)
    data = _read_json(path)
    if version_of(data, str(path)) == 0 and is_flat_config(data):
        flat_file = FlatFile(data, json_format(data))
        if data.get("dataset_config"):
            flat_file = with_dataset_config(flat_file, path.parent, str(path))
        return _build_flat(flat_file, str(path), skip)
    return _build(data, str(path), skip, from_file=True)


def config_from_dict(data: dict[str, Any], source: str = "<config>", skip: Iterable[str] | None = None) -> TrainConfig:
    """The load pipeline for a dict that is already in memory (the wizard's draft, a test)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config is a JSON object {{...}}, not {type(data).__name__}")
    return _build(copy.deepcopy(data), source, skip).config


def _build(data: dict[str, Any], source: str, skip: Iterable[str] | None, *, from_file: bool = False) -> LoadedConfig:
    skip_paths = skip_paths_for(skip or ())
    version = version_of(data, source)
    if version == 0 and is_flat_config(data):
        return _build_flat(FlatFile(data, json_format(data)), source, skip, from_file=from_file)
    try:
        data = migrate(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _finish(data, source, skip_paths, version, [], from_file=from_file)


def _build_flat(flat_file: FlatFile, source: str, skip: Iterable[str] | None, *, from_file: bool = True) -> LoadedConfig:
    """A flat file (LETS/GUI JSON, sd-scripts/LETS TOML) mapped onto the sections, stamped with
    the current version, and checked like any other config."""
    skip_paths = skip_paths_for(skip or ())
    flat = {key: value for key, value in flat_file.flat.items() if not _skipped_flat_key(key, skip_paths)}
    imported = flat_to_nested(flat, source, flat_file.source_format)
    if imported.dataset_config:  # an in-memory dict cannot say where a relative TOML path starts
        raise ConfigError(f"{source}: dataset_config = {imported.dataset_config!r} can only be read from a config file")
    nested: dict[str, Any] = imported.nested
    if flat_file.subsets is not None and "dataset.subsets" not in skip_paths:
        dataset = nested.setdefault("dataset", {})
        dataset["subsets"] = flat_file.subsets
        dataset.pop("reg_img_folder", None)
        dataset["img_folder"] = None
    extra: list[Problem] = []
    known = set(field_paths())
    for path, value in flat_file.own.items():  # lora-wizard's own settings, by field name: they win
        if path not in known:
            extra.append(Problem(f"[lora_wizard] {path}", "is not a config field", _suggest(path) or "remove it", value))
            continue
        section, name = path.split(".")
        nested.setdefault(section, {})[name] = value
    notes = [f"{source}: {note}" for note in (*flat_file.notes, *imported.notes)]
    if imported.dropped:
        notes.append(f"{source}: left out (session settings, or values the file's own settings leave unused): "
                     + ", ".join(imported.dropped))
    if flat_file.source_format != SourceFormat.LETS_JSON and "resolution" not in nested.get("dataset", {}):
        extra.append(Problem("dataset.resolution", "the file gives no resolution (sd-scripts refuses to train without one)",
                             "set resolution, e.g. 512 or 1024"))
    return _finish({**nested, "version": CONFIG_VERSION}, source, skip_paths, 0, notes, from_file=from_file,
                   extra=extra, source_format=flat_file.source_format)


def _finish(
    data: dict[str, Any],
    source: str,
    skip_paths: frozenset[str],
    version: int,
    notes: list[str],
    *,
    from_file: bool,
    extra: list[Problem] | None = None,
    source_format: SourceFormat | None = None,
) -> LoadedConfig:
    _drop_paths(data, skip_paths)
    unnamed = unnamed_inputs(data, skip_paths) if from_file else []
    cfg, problems = validated(data)
    problems = unnamed + (extra or []) + problems
    if problems:
        raise ConfigError(problems_text(problems, source))
    return LoadedConfig(cfg, version, tuple(notes), source_format)  # type: ignore[arg-type]


#: what a config file must name itself: their defaults are the built-in demo model and sample
#: dataset, which only the wizard's defaults and the `demo` command should ever mean
MUST_NAME: dict[str, str] = {
    "model.base_model": "set it to your base model (a .safetensors/.ckpt file or a diffusers folder), "
    f"or {DEMO_MODEL} for the built-in demo model",
    "dataset.img_folder": "set it to the folder that holds your <repeats>_<name> image folders, "
    f"or {SAMPLE_DATASET} for the generated sample dataset",
}


def unnamed_inputs(data: dict[str, Any], skip_paths: frozenset[str]) -> list[Problem]:
    """A file that does not name its base model or its images (an imported preset, a hand-written
    file) must not train the built-in demo on the sample images without a word. Skipped fields are
    not asked of the file: the wizard asks them again."""
    problems = []
    for path, fix in MUST_NAME.items():
        section, name = path.split(".")
        if path in skip_paths or section in skip_paths:
            continue
        holder = data.get(section)
        listed = isinstance(holder, dict) and path == "dataset.img_folder" and bool(holder.get("subsets"))
        if not listed and (not isinstance(holder, dict) or holder.get(name) is None):
            problems.append(Problem(path, "the file does not name it", fix))
    return problems


def _read_json(path: Path) -> dict[str, Any]:
    text = read_config_text(path, ".json config file", " (saved configs are in saved_configs/)")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_nan)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix the file there"
        ) from None
    except _BadJson as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config is a JSON object {{...}} at the top level, not a {type(data).__name__}; "
            "wrap the settings in braces"
        )
    return data


class _BadJson(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJson(f"the key {key!r} appears twice in one object; keep one (JSON readers keep either)")
        out[key] = value
    return out


def _no_nan(name: str) -> Any:
    raise _BadJson(f"{name} is not a number a config can hold; write a finite number")


# ------------------------------------------------------------------------------------ skip list


def skip_paths_for(skip: Iterable[str]) -> frozenset[str]:
    """Dotted paths (or whole sections) for a skip list of dotted paths and LETS/kohya key names."""
    if isinstance(skip, str):
        skip = [skip]
    paths: set[str] = set()
    unknown: list[str] = []
    known = set(field_paths())
    for entry in skip:
        if entry in known or entry in SECTIONS:
            paths.add(entry)
        elif flat_key_paths(entry):
            paths.update(flat_key_paths(entry))
        elif entry not in SESSION_KEYS:  # LETS' default list names them; nothing to drop
            unknown.append(entry)
    if unknown:
        raise ConfigError(
            "skip list: "
            + "; ".join(f"{entry!r} is not a config field or LETS key; {_suggest(entry) or 'remove it'}" for entry in unknown)
        )
    return frozenset(paths)


def _skipped_flat_key(key: str, skip_paths: frozenset[str]) -> bool:
    targets = flat_key_paths(key)
    return bool(targets) and all(t in skip_paths or t.split(".")[0] in skip_paths for t in targets)


def _drop_paths(data: dict[str, Any], skip_paths: frozenset[str]) -> None:
    for path in skip_paths:
        section, _, name = path.partition(".")
        if not name:
            data.pop(section, None)
        elif isinstance(data.get(section), dict):
            data[section].pop(name, None)


# ----------------------------------------------------------------------------------- validation


def validate(data: dict[str, Any], source: str) -> TrainConfig:
    """`TrainConfig.model_validate` and the rulebook's config rules, with every problem of the
    file (unknown keys, bad values, contradicting fields) reported together in one ConfigError."""
    cfg, problems = validated(data)
    if problems:
        raise ConfigError(problems_text(problems, source))
    return cfg  # type: ignore[return-value]


def validated(data: dict[str, Any]) -> tuple[TrainConfig | None, list[Problem]]:
    """The config, or every problem that stops it. When some fields are invalid, the rules between
    fields are still checked on the rest (the invalid ones at their defaults), so one round of
    fixing is enough; a rule about a field that is itself invalid waits for its value."""
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = field_problems(exc, data)
        bad = {p.where for p in problems} | {_dotted(tuple(e["loc"][:2])) for e in exc.errors()}
        rest = _without(data, [tuple(e["loc"][:2]) for e in exc.errors()])
        try:
            partial = TrainConfig.model_validate(rest)
        except ValidationError:
            return None, problems
        return None, problems + [p for p in errors(rules.check(partial)) if p.where not in bad]
    problems = errors(rules.check(cfg))
    return (None, problems) if problems else (cfg, [])


def problems_text(problems: list[Problem], source: str) -> str:
    """One line per problem, each naming the file, as the loader, preflight and the wizard show them."""
    if len(problems) == 1:
        return render(problems[0], source)
    lines = "\n".join(f"  - {render(p, source)}" for p in problems)
    return f"{len(problems)} problems in {source}:\n{lines}"


def _without(data: dict[str, Any], locs: list[tuple[Any, ...]]) -> dict[str, Any]:
    """`data` less the (section, field) entries named; a bad section is dropped whole."""
    out = copy.deepcopy(data)
    for loc in locs:
        section = out.get(loc[0]) if loc else None
        if len(loc) == 1 or not isinstance(section, dict):
            out.pop(loc[0], None)
        else:
            section.pop(loc[1], None)
    return out


# ----------------------------------------------------------------------------------------- save


def dump_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON-ready data: paths as strings, enums as their values, version included."""
    return cfg.model_dump(mode="json")


def save_config(cfg: TrainConfig, folder: Path, name: str | None = None, *, now: datetime | None = None) -> Path:
    """Write `<name or saving.output_name or 'config'>-<YYYYmmdd-HHMMSS>.json` into `folder`.

    Atomic (a temp file renamed into place) and never over an existing file: a second save in the
    same second gets `-2`, `-3`, ... The config is re-validated first, so a file that `load_config`
    would refuse is never written (a `model_copy(update=...)` skips validation).
    """
    data = dump_config(cfg)
    validate(data, "the config to save")
    stem = _file_stem(name or cfg.saving.output_name or "config")
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for _ in range(100):  # another writer may take the free name between the check and the rename
        path = next_free_path(Path(folder) / f"{stem}-{stamp}.json")
        try:
            return atomic_write_text(path, text)
        except OutputExistsError:
            continue
    raise OutputExistsError(f"{folder}: could not find a free file name for {stem}-{stamp}.json")


def _file_stem(name: str) -> str:
    stem = name.strip().removesuffix(".json")
    bad = sorted(set('/\\:*?"<>|') & set(stem))
    if not stem or bad or stem in (".", ".."):
        raise ConfigError(f"config name {name!r}: use a plain file name without {''.join(bad) or 'blanks'}")
    return stem
