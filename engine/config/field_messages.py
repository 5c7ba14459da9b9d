"""How a refused config field is told: the field as a path, the value as written, what is wrong
and what the field accepts (from its type and bounds), and the names close to an unknown key.

engine/config/io.py reports validation errors through these; the wizard tells a refused answer the
same way.
"""

from __future__ import annotations

import difflib
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError

from engine.config.flat_keys import FLAT_KEYS
from engine.config.schema import CONFIG_VERSION, SECTIONS, field_paths, section_model
from engine.problems import Problem


def field_problems(exc: ValidationError, data: dict[str, Any]) -> list[Problem]:
    """One problem per field pydantic refused (the members of a union merged into one)."""
    by_field: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        # a field of a list item is its own field (dataset.subsets[0].image_dir)
        key = loc[:4] if len(loc) > 3 and isinstance(loc[2], int) else loc[:2]
        by_field.setdefault(key, []).append(error)
    problems: list[Problem] = []
    for loc, errs in by_field.items():
        paths = {_dotted(e["loc"]) for e in errs}
        if len(paths) == 1:
            problems.append(field_problem(paths.pop(), errs[0].get("input"), errs))
        else:  # the members of a union complain about different parts: show the whole field
            problems.append(field_problem(_dotted(loc), _lookup(data, loc), errs))
    return problems


def _lookup(data: dict[str, Any], loc: tuple[Any, ...]) -> Any:
    value: Any = data
    for key in loc:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _dotted(loc: tuple[Any, ...]) -> str:
    """('dataset', 'resolution', 'tuple[int, int]', 0) -> 'dataset.resolution[0]'."""
    parts = [str(loc[0])]
    if len(loc) > 1:
        parts.append(f".{loc[1]}")
    after_index = False
    for item in loc[2:]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif after_index:
            parts.append(f".{item}")  # a field of a list item (dataset.subsets[0].image_dir)
        # other strings are pydantic's names of union members
        after_index = isinstance(item, int)
    return "".join(parts)


def field_problem(path: str, value: Any, errs: list[dict[str, Any]]) -> Problem:
    """A field pydantic refused: the value as written, what is wrong, and what it accepts."""
    if errs[0]["type"] == "extra_forbidden":
        return Problem(path, "unknown key", _suggest(path) or "remove it", value)
    if all(e["type"] in ("enum", "literal_error") for e in errs):
        return Problem(path, "not one of the choices", f"use {describe_field(path)}", value)
    what = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errs))
    if any(e["type"] == "value_error" for e in errs):
        return Problem(path, what, "", value)  # our validators' messages already say what to write
    if errs[0]["type"] == "missing":
        return Problem(path, "missing", f"give {describe_field(path)}")
    return Problem(path, what, f"use {describe_field(path)}", value)


def _suggest(path: str) -> str:
    """'did you mean ...?' for an unknown key: close spellings, the same name in another section,
    and the config name of a LETS/kohya key."""
    name = path.rsplit(".", 1)[-1]
    known = field_paths()
    leaves = {p.rsplit(".", 1)[-1] for p in known}
    close = [FLAT_KEYS[name].path] if name in FLAT_KEYS else []
    close += difflib.get_close_matches(path, known + list(SECTIONS), n=3, cutoff=0.8)
    close += [p for leaf in difflib.get_close_matches(name, leaves, n=2, cutoff=0.75) for p in known if p.endswith("." + leaf)]
    close = list(dict.fromkeys(close))[:3]
    return f"did you mean {' or '.join(close)}?" if close else ""


def describe_field(path: str) -> str:
    """What a field accepts, from its type and constraints: 'a whole number >= 1 and <= 1024'."""
    section, _, rest = path.partition(".")
    name = rest.split("[", 1)[0]
    if section not in SECTIONS:
        return "a field of the config" if section != "version" else f"{CONFIG_VERSION}"
    if not name:
        return f"an object with the {section} fields"
    model = section_model(section)
    if "]." in rest:  # a field of a list item: dataset.subsets[0].image_dir
        item = typing.get_args(typing.get_args(model.model_fields[name].annotation)[0])[0]
        model, name = item, rest.rsplit("].", 1)[1]
    info = model.model_fields.get(name)
    if info is None:
        return "a known field"
    bounds = [f"{sign} {getattr(item, attr)}" for item in info.metadata for kind, sign, attr in _BOUNDS if isinstance(item, kind)]
    text = _describe_type(info.annotation)
    if bounds:
        text += " " + " and ".join(bounds)
    return text + (f" ({info.description})" if info.description else "")


_BOUNDS = ((Ge, ">=", "ge"), (Gt, ">", "gt"), (Le, "<=", "le"), (Lt, "<", "lt"))


def _describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (", or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is list:
        return "a list of " + {int: "whole numbers", float: "numbers"}.get(args[0], _describe_type(args[0]))
    if origin is tuple:
        return "[width, height]" if args == (int, int) else "a list"
    if origin is dict:
        return "an object of name: value pairs"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(json.dumps(m.value) for m in annotation)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path"}
    return names.get(annotation, str(annotation))
