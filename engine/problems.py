"""A problem found in a user's input, and the one way it becomes a line of text.

Config rules (engine/config/rules.py), the loader's field checks (engine/config/io.py), the dataset lint
(engine/data/lint.py) and the model checks (engine/models/inspect.py) all report `Problem`s, so the
loader, preflight and the wizard show them alike: the field or file, the value as written, what is
wrong, and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any


class Level(StrEnum):
    ERROR = "error"  # nothing trains until it is fixed
    WARNING = "warning"  # it trains, but maybe not as meant: the message says what happens


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: `Problem.value` when there is no value to show
UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # the field ("optim.learning_rate") or the file or folder to look at
    problem: str  # what is wrong
    fix: str = ""  # what to do about it
    value: Any = UNSET  # the value as written, shown after the field
    level: Level = Level.ERROR

    def __str__(self) -> str:
        return render(self)


def render(problem: Problem, source: str | None = None, *, with_where: bool = True) -> str:
    """`[source: ]where[ = value]: problem[; fix]`. `with_where=False` leaves the field out, for
    the wizard, which shows a problem under the question that asked for that field."""
    head = problem.where if with_where else ""
    if problem.value is not UNSET:
        value = show_value(problem.value)
        head = f"{head} = {value}" if head else value
    text = f"{head}: {problem.problem}" if head else problem.problem
    if problem.fix:
        text += f"; {problem.fix}"
    return f"{source}: {text}" if source else text


def show_value(value: Any) -> str:
    """A value as a user writes it in a config file (JSON). A long list or table is shortened; text
    never is (a path cut in the middle cannot be found or copied)."""
    if isinstance(value, Enum):
        value = value.value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 or isinstance(value, str) else text[:57] + "..."


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == Level.ERROR]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == Level.WARNING]
