"""Flat settings from other tools -> the config's nested sections.

LoRA_Easy_Training_Scripts saved its `ArgStore` as one flat JSON object, the kohya_ss GUI saves
its fields the same way, and sd-scripts' own TOML and command line are flat lists of its argument
names (engine/config/toml_import.py and cli_args.py turn those into the same flat dict). This
module maps such a dict onto the config's sections through the one key table
(engine/config/flat_keys.py), with the meanings of the tool that wrote it (engine/config/sources.py,
gui_import.py, flat_training.py). It is a pure function of the dict: no files (a dataset TOML the
file names is returned for the caller to read), no validation (the caller validates once).

Conventions the mapping follows:
* LETS wrote `null` and the GUI writes `""` for "not set": such a key is left out, so the default
  of the file's tool applies (for the GUI and sd-scripts: sd-scripts' defaults).
* The GUI writes `0` for "off" in options whose real values are positive (`min_snr_gamma`, ...).
* The GUI keeps values of widgets it does not use (`conv_dim` with a plain LoRA, `huber_c` with the
  L2 loss, the LyCORIS knobs with a kohya LoRA): those are dropped and listed, because the run the
  GUI launched did not use them either.
* An option lora-wizard does not offer is listed once when it is off, and refused by its feature's
  name when it is on (engine/config/not_offered.py); a key no tool has is refused with its value and
  the nearest known names.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from engine.config.flat_keys import (
    FLAT_KEYS,
    IGNORED_KEYS,
    LAUNCH_KEYS,
    REQUIRED_KEYS,
    SESSION_KEYS,
    SPECIAL_KEYS,
    Target,
    flat_key_paths,
)
from engine.config.flat_network import read_network
from engine.config.flat_training import (
    drop_inactive_noise,
    drop_unused_state_keeping,
    read_adafactor,
    read_family_and_attention,
    read_limits,
    read_optimizer_flags,
    read_rates,
    read_resolution,
    read_tag_file,
    read_text_encoder_cache,
    read_warmup,
)
from engine.config.gui_import import gui_meanings
from engine.config.not_offered import NOT_OFFERED, refusal, refusal_fix
from engine.config.schema import SECTIONS
from engine.config.sources import (
    FORMAT_DEFAULTS,
    SourceFormat,
    bucket_bounds_default,
    json_format,
)
from engine.errors import ConfigError
from engine.problems import Problem, render

__all__ = [
    "FLAT_KEYS", "IGNORED_KEYS", "NOT_OFFERED", "SESSION_KEYS", "SPECIAL_KEYS", "FlatImport", "Target",
    "flat_key_paths", "flat_to_nested", "is_flat_config", "known_flat_keys",
]

#: a key that cannot be an option name of any tool: a comment line like "=== Model ===": null
_OPTION_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class FlatImport:
    """The nested dict built from a flat file, the keys left out silently (session settings, values
    the file's own settings disable), and notes for the user."""

    nested: dict[str, dict[str, Any]]
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_format: SourceFormat = SourceFormat.LETS_JSON
    dataset_config: str | None = None  # a dataset TOML the file names, for the caller to read


def is_flat_config(raw: dict[str, Any]) -> bool:
    """True for LETS/kohya flat files: no `version` and no section objects."""
    return "version" not in raw and not any(isinstance(v, dict) and k in SECTIONS for k, v in raw.items())


def known_flat_keys() -> list[str]:
    return [*FLAT_KEYS, *SPECIAL_KEYS, *SESSION_KEYS, *IGNORED_KEYS, *NOT_OFFERED]


def flat_to_nested(raw: dict[str, Any], source: str = "config", source_format: SourceFormat | None = None) -> FlatImport:
    """Map a flat dict onto the nested layout. Raises ConfigError naming every bad key at once."""
    fmt = source_format or json_format(raw)
    # The GUI writes "" where LETS wrote null: one spelling of "not set" from here on. Keys that
    # cannot be option names are comments (some hand-edited presets carry "=== Model ===": null).
    raw = {key: (None if value == "" else value) for key, value in raw.items() if _OPTION_NAME.match(key)}
    out = FlatImport(nested={}, source_format=fmt)
    problems: list[Problem] = []
    if fmt == SourceFormat.KOHYA_GUI:
        raw = gui_meanings(raw, out.notes, out.dropped, problems)
    off: list[str] = []
    ignored: dict[str, list[str]] = {}
    _map_plain_keys(raw, out, problems, off, ignored)
    if not problems:
        _read_special_keys(raw, fmt, out, problems)
    if problems:
        title = f"{source} ({fmt.value})"
        lines = [render(p) for p in problems]
        raise ConfigError(f"{title}: {lines[0]}" if len(lines) == 1 else f"{title} ({len(lines)} problems):\n" + "\n".join(f"  - {x}" for x in lines))
    if off:
        out.notes.append("left out at their off values (options lora-wizard does not offer): " + ", ".join(off))
    for reason, keys in ignored.items():
        out.notes.append(f"ignored ({reason}): " + ", ".join(keys))
    out.nested = {section: values for section, values in out.nested.items() if values}
    return out


def _map_plain_keys(raw: dict[str, Any], out: FlatImport, problems: list[Problem], off: list[str], ignored: dict[str, list[str]]) -> None:
    set_by: dict[str, tuple[str, Any]] = {}  # path -> (key, value), to catch two keys disagreeing
    for key, value in raw.items():
        if key in SESSION_KEYS:
            out.dropped.append(key)
        elif key in IGNORED_KEYS:
            shown = f"{key}={value}" if key in LAUNCH_KEYS and value not in (None, False, 0, 1, "no", "default") else key
            ignored.setdefault(IGNORED_KEYS[key], []).append(shown)
        elif key in NOT_OFFERED:
            rule = NOT_OFFERED[key]
            if not rule.applies(raw):
                out.dropped.append(key)
            elif rule.is_off(value):
                off.append(key)
            else:
                problems.append(Problem(key, refusal(key, value), refusal_fix(key), value))
        elif key in REQUIRED_KEYS and (value is None or not str(value).strip()):
            path = FLAT_KEYS[key].path
            problems.append(Problem(key, "is empty", f"set it (it becomes {path}), or remove the key to use the default"))
        elif key in FLAT_KEYS:
            _set_plain(key, value, FLAT_KEYS[key], out, problems, set_by)
        elif key not in SPECIAL_KEYS:
            problems.append(Problem(key, "unknown key", _guess(key), value))


def _set_plain(key: str, value: Any, target: Target, out: FlatImport, problems: list[Problem], set_by: dict) -> None:
    try:
        converted = target.convert(value)
    except (TypeError, ValueError) as exc:
        problems.append(Problem(key, f"cannot be read ({exc})", "fix the value", value))
        return
    if converted is None:  # not set: the default applies
        return
    earlier = set_by.get(target.path)
    if earlier is not None and earlier[1] != converted:
        problems.append(Problem(key, f"and {earlier[0]} = {earlier[1]!r} both set {target.path}", "keep one", converted))
        return
    set_by[target.path] = (key, converted)
    section, name = target.path.split(".")
    out.nested.setdefault(section, {})[name] = converted


def _guess(key: str) -> str:
    """The known names closest to a misspelt key: trainable options first, then the rest."""
    trainable = [*FLAT_KEYS, *SPECIAL_KEYS]
    close = difflib.get_close_matches(key, trainable, n=2, cutoff=0.75)
    close += difflib.get_close_matches(key, [*NOT_OFFERED, *IGNORED_KEYS, *SESSION_KEYS], n=1, cutoff=0.85)
    if not close:
        return "remove it (no tool this file could come from has an option of that name)"
    return f"did you mean {' or '.join(dict.fromkeys(close))}?"


def _read_special_keys(raw: dict[str, Any], fmt: SourceFormat, out: FlatImport, problems: list[Problem]) -> None:
    nested, notes = out.nested, out.notes
    read_family_and_attention(raw, fmt, nested, problems)
    optim = nested.setdefault("optim", {})
    read_optimizer_flags(raw, optim, notes)
    read_rates(raw, fmt, nested, notes, problems)
    read_text_encoder_cache(raw, nested, notes, problems)
    read_warmup(raw, fmt, optim, notes, problems)
    read_limits(raw, fmt, nested.setdefault("training", {}), notes, problems)
    read_tag_file(raw, nested.setdefault("saving", {}))
    read_resolution(raw, nested.setdefault("dataset", {}), problems)
    off: list[str] = []
    problems += read_network(raw, nested.setdefault("network", {}), out.dropped, off)
    if off:
        notes.append("left out at their off values (options lora-wizard does not offer): " + ", ".join(off))
    drop_inactive_noise(raw, nested, out.dropped)
    drop_unused_state_keeping(nested, notes)
    _format_defaults(fmt, nested, notes)
    read_adafactor(optim, fmt, notes)
    if raw.get("dataset_config"):
        out.dataset_config = str(raw["dataset_config"])


def _format_defaults(fmt: SourceFormat, nested: dict[str, dict[str, Any]], notes: list[str]) -> None:
    """What the file's tool trains with for the settings the file leaves out."""
    table = FORMAT_DEFAULTS[fmt]
    if not table:
        return
    dataset = nested.setdefault("dataset", {})
    if "min_bucket_reso" not in dataset or "max_bucket_reso" not in dataset:
        low, high = bucket_bounds_default(dataset.get("resolution"))
        dataset.setdefault("min_bucket_reso", low)
        dataset.setdefault("max_bucket_reso", high)
    for path, value in table.items():
        section, name = path.split(".")
        nested.setdefault(section, {}).setdefault(name, value)
    if "seed" not in nested.get("training", {}):
        notes.append("seed is not set: sd-scripts would draw a random one; lora-wizard trains with its fixed default, 23")
