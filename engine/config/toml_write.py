"""A small TOML writer for the files lora-wizard exports (engine/config/export.py).

Enough of TOML for a config: a table of scalars and lists, sub-tables, and arrays of tables.
Strings are written as literal strings ('...') when they can be, so Windows paths keep their
backslashes as typed; other strings as basic strings with escapes. Keys in order of the dict.
"""

from __future__ import annotations

import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(data: dict[str, Any], header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")
    lines += _table_body(data)
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{_key(key)}]", *_table_body(value)]
            lines += _sub_tables(value, [key])
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]", *_table_body(item)]
                lines += _sub_tables(item, [key])
    text = "\n".join(lines).strip("\n") + "\n"
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def _sub_tables(table: dict[str, Any], path: list[str]) -> list[str]:
    lines: list[str] = []
    for key, value in table.items():
        full = ".".join(_key(p) for p in [*path, key])
        if isinstance(value, dict):
            lines += ["", f"[{full}]", *_table_body(value), *_sub_tables(value, [*path, key])]
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{full}]]", *_table_body(item), *_sub_tables(item, [*path, key])]
    return lines


def _table_body(table: dict[str, Any]) -> list[str]:
    return [
        f"{_key(key)} = {_value(value)}"
        for key, value in table.items()
        if value is not None and not isinstance(value, dict) and not _is_table_array(value)
    ]


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to a config file")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _string(text: str) -> str:
    if "'" not in text and "\n" not in text and "\r" not in text and all(ch >= " " or ch == "\t" for ch in text):
        return f"'{text}'"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    escaped = "".join(ch if ch >= " " else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'
