"""sd-scripts' dataset TOML (`--dataset_config`) as config values: the subsets list and the
dataset-wide settings.

Layout (kohya-ss/sd-scripts library/config_util.py, `ConfigSanitizer`): an optional `[general]`
table, then `[[datasets]]`, each with `[[datasets.subsets]]` tables of one image folder each. A
subset option is looked up in the subset, then its dataset, then `[general]`, then the training
arguments, then sd-scripts' default (`BlueprintGenerator.generate_params_by_fallbacks`). The
dataset-wide values found here (the dataset's, else `[general]`'s) are written over the training
file's flat keys, so the one flat mapping turns them into config fields with the rest; each
subset keeps what it sets itself, and a config subset's unset option is the dataset's, the same
fallback. LETS' TOML keeps its subsets in a top-level `[[subsets]]` array and its dataset-wide
values in `dataset_args` tables: it is read as one dataset here too.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from engine.config.flat_keys import flat_key_paths
from engine.config.not_offered import NOT_OFFERED, refusal, refusal_fix
from engine.config.schema import CAPTION_OPTIONS
from engine.problems import Problem

#: dataset-wide options ([[datasets]] or [general]) -> the flat key that carries them
DATASET_OPTIONS: dict[str, str] = {
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "enable_bucket": "enable_bucket",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "bucket_reso_steps": "bucket_reso_steps",
    "bucket_no_upscale": "bucket_no_upscale",
    "prior_loss_weight": "prior_loss_weight",
    "max_token_length": "max_token_length",
}
#: subset options lora-wizard applies to the whole dataset only: every folder must agree
DATASET_WIDE_AUGMENTATIONS = ("flip_aug", "color_aug", "random_crop")
#: options with no dataset-wide field here: a [general]/[[datasets]] value is copied into each subset
PUSHED_DOWN = ("num_repeats", "class_tokens")
SUBSET_ONLY = ("image_dir", "is_reg")
SUBSET_KEYS = frozenset((*CAPTION_OPTIONS, *PUSHED_DOWN, *SUBSET_ONLY, *DATASET_WIDE_AUGMENTATIONS))
_ASCENDABLE = frozenset((*CAPTION_OPTIONS, *PUSHED_DOWN, *DATASET_WIDE_AUGMENTATIONS, *DATASET_OPTIONS))


@dataclass
class DatasetSettings:
    """What a dataset TOML adds to a training file: flat keys (dataset-wide) and the subsets."""

    flat: dict[str, Any] = field(default_factory=dict)
    subsets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_dataset_tables(data: dict[str, Any], where: str, training: dict[str, Any]) -> DatasetSettings:
    """An sd-scripts dataset TOML's tables (`training`: the training file's flat keys, the last
    fallback before sd-scripts' defaults)."""
    out = DatasetSettings()
    for key in data:
        if key not in ("general", "datasets"):
            out.problems.append(Problem(f"{where} [{key}]", "is not a table of a dataset TOML", "use [general] and [[datasets]]"))
    general = data.get("general") or {}
    datasets = data.get("datasets") or []
    if not isinstance(general, dict) or not isinstance(datasets, list):
        out.problems.append(Problem(where, "[general] must be a table and [[datasets]] an array of tables", "see sd-scripts' docs/config_README"))
        return out
    if len(datasets) != 1:
        what = "no [[datasets]] table" if not datasets else f"{len(datasets)} [[datasets]] tables"
        out.problems.append(
            Problem(where, f"has {what}; lora-wizard trains one dataset (its folders as [[datasets.subsets]])",
                    "put every folder's [[datasets.subsets]] under one [[datasets]]")
        )
        return out
    dataset = datasets[0]
    subsets = dataset.get("subsets") or []
    _check_keys(general, f"{where} [general]", _ASCENDABLE, out)
    _check_keys({k: v for k, v in dataset.items() if k != "subsets"}, f"{where} [[datasets]]", _ASCENDABLE, out)
    if not subsets:
        out.problems.append(Problem(f"{where} [[datasets]]", "has no [[datasets.subsets]]", "add one per image folder"))
        return out
    layers = [dataset, general]
    return _fill(out, layers, subsets, where, training)


def read_lets_subsets(subsets: list[dict[str, Any]], dataset_args: dict[str, Any], where: str, training: dict[str, Any]) -> DatasetSettings:
    """LETS' TOML: its `[[subsets]]` with the `dataset_args` values as the dataset's. LETS passed
    no value that is false, 0 or empty to sd-scripts (modules/validator.py `validate_subset`)."""
    out = DatasetSettings()
    general = {k: v for k, v in dataset_args.items() if v}
    kept = [{k: v for k, v in subset.items() if v and k != "name"} for subset in subsets]
    _check_keys(general, f"{where} dataset_args", _ASCENDABLE, out)
    if not kept:
        out.problems.append(Problem(f"{where} [[subsets]]", "the file lists no image folder", "add a subset with image_dir"))
        return out
    return _fill(out, [general], kept, where, training)


def _fill(out: DatasetSettings, layers: list[dict[str, Any]], subsets: list[dict[str, Any]], where: str, training: dict[str, Any]) -> DatasetSettings:
    for option, flat_key in DATASET_OPTIONS.items():
        value = _first(option, layers)
        if value is not None:
            out.flat[flat_key] = value
    for option in CAPTION_OPTIONS:
        value = _first(option, layers)
        if value is not None:
            out.flat[option] = value
    for index, subset in enumerate(subsets):
        place = f"{where} subset {index + 1}"
        if not isinstance(subset, dict):
            out.problems.append(Problem(place, "is not a table", "write it as [[datasets.subsets]]"))
            continue
        _check_keys(subset, place, SUBSET_KEYS, out)
        if not subset.get("image_dir"):
            out.problems.append(Problem(place, "has no image_dir", "set image_dir to the folder of its images"))
            continue
        entry = {k: subset[k] for k in (*SUBSET_ONLY, *CAPTION_OPTIONS) if subset.get(k) is not None}
        for option in PUSHED_DOWN:
            value = subset.get(option, _first(option, layers))
            if value is not None:
                entry[option] = value
        if entry.get("keep_tokens_separator") == "":  # sd-scripts' default: no separator
            del entry["keep_tokens_separator"]
        out.subsets.append(entry)
    for option in DATASET_WIDE_AUGMENTATIONS:
        seen = {bool(s.get(option, _first(option, layers) or training.get(option) or False)) for s in subsets if isinstance(s, dict)}
        if len(seen) > 1:
            out.problems.append(
                Problem(f"{where} {option}", "differs between the folders; lora-wizard applies it to the whole dataset",
                        f"set {option} the same for every subset (or in [general])")
            )
        elif seen:
            out.flat[option] = seen.pop()
    return out


def _first(option: str, layers: list[dict[str, Any]]) -> Any:
    for layer in layers:
        if layer.get(option) is not None:
            return layer[option]
    return None


def _check_keys(table: dict[str, Any], place: str, allowed: frozenset[str], out: DatasetSettings) -> None:
    for key, value in table.items():
        if key in allowed or key == "subsets":
            continue
        if key in NOT_OFFERED:
            if not NOT_OFFERED[key].is_off(value):
                out.problems.append(Problem(f"{place} {key}", refusal(key, value), refusal_fix(key), value))
            continue
        close = difflib.get_close_matches(key, sorted(allowed), n=2, cutoff=0.75)
        elsewhere = "" if not flat_key_paths(key) else " (a training option: it belongs in the training file)"
        fix = f"did you mean {' or '.join(close)}?" if close else "remove it"
        out.problems.append(Problem(f"{place} {key}", f"is not a dataset option{elsewhere}", fix, value))
