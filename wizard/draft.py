"""What a question is, and the draft its answers build: the data model of the wizard's questions.

A question either fills one config field (`path` is "section.field") or is a wizard-only yes/no gate
(`path` starts with "ask.") that other questions depend on through a named `when` predicate
(wizard/predicates.py). A field whose question is in the list but whose `when` is false is reset to
its default, so switching a gate off also clears what it used to enable. The questions themselves
are in wizard/lets_questions.py and wizard/advanced_questions.py; wizard/questions.py lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.config.schema import TrainConfig, section_model

#: paths of wizard-only answers (not config fields) start with this
ASK = "ask."
#: the gate of the advanced questions
ADVANCED = "ask.advanced"


class Kind(StrEnum):
    CONFIRM = "confirm"
    SELECT = "select"
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    FILE = "file"
    DIR = "dir"
    #: a prompt file, or one prompt typed in (written to a prompt file when it is accepted)
    PROMPTS = "prompts"


@dataclass
class Draft:
    """The answers so far on top of the config being edited (defaults for a new one, a loaded file's
    values otherwise)."""

    base: TrainConfig
    questions: tuple[Question, ...]
    answers: dict[str, Any] = field(default_factory=dict)
    #: answers (and unasked fields) whose value follows an earlier answer, and why: the review marks them
    derived: dict[str, Followed] = field(default_factory=dict)
    #: the questions answered in this pass, in the order asked: "back" re-asks the last of them
    asked: list[str] = field(default_factory=list)
    #: answers taken back with "back": proposed again when their question comes
    taken_back: dict[str, Any] = field(default_factory=dict)
    #: the question being asked (where a draft kept after Ctrl-C continues); None once all are answered
    asking: str | None = None
    #: the file the config was loaded from (the review shows what differs from it)
    loaded_from: Path | None = None
    #: where the wizard writes the files an answer stands for (a sample prompt typed in)
    folder: Path = Path("saved_configs")

    def value(self, path: str) -> Any:
        """The current value: the answer if given, else the base config's value (or, for a gate,
        what its question would propose)."""
        if path in self.answers:
            return self.answers[path]
        if path.startswith(ASK):
            return question_named(path).proposal(self)
        return field_value(self.base, path)

    def answer(self, q: Question, value: Any) -> None:
        """Record an answer; then answers that took a value following earlier answers follow again
        (an optimizer changed at the review brings its learning rate along)."""
        self.answers[q.path] = value
        self.taken_back.pop(q.path, None)
        followed = q.follows(self) if q.follows else None
        if followed is not None and followed.value == value:
            self.derived[q.path] = followed
        else:
            self.derived.pop(q.path, None)
        for other in self.questions:
            if other is not q and other.path in self.derived and other.path in self.answers and other.follows:
                again = other.follows(self)
                if again is not None:
                    self.answers[other.path], self.derived[other.path] = again.value, again

    def take_back(self) -> Question | None:
        """"Back": the last question answered in this pass loses its answer (kept as its proposal)
        and is asked next; None when no question was answered yet."""
        while self.asked:
            path = self.asked.pop()
            if path in self.answers:
                self.taken_back[path] = self.answers.pop(path)
                return question_named(path)
        return None

    def shown_value(self, q: Question) -> Any:
        """What the question proposes now: its answer, else the answer taken back, else its proposal."""
        if q.path in self.answers:
            return self.answers[q.path]
        if q.path in self.taken_back:
            return self.taken_back[q.path]
        return q.proposal(self)

    def in_play(self, q: Question) -> bool:
        """Advanced questions count only once the user said yes to "advanced settings?"."""
        return not q.advanced or bool(self.value(ADVANCED))

    def active(self) -> list[Question]:
        return [q for q in self.questions if self.in_play(q) and q.when(self)]

    def to_data(self) -> dict[str, Any]:
        """The draft as TrainConfig input (python values, not yet validated together)."""
        from wizard.predicates import HIDDEN_FOLLOWERS

        data = self.base.model_dump()
        for q in self.questions:
            if q.path.startswith(ASK) or not self.in_play(q):
                continue
            section, name = q.path.split(".")
            if not q.when(self):
                data[section][name] = field_default(q.path)
            elif q.path in self.answers:
                data[section][name] = self.answers[q.path]
        for path, follows in HIDDEN_FOLLOWERS:
            section, name = path.split(".")
            followed = follows(self, data) if field_value(self.base, path) == field_default(path) else None
            if followed is None:
                self.derived.pop(path, None)
            else:
                data[section][name] = followed.value
                self.derived[path] = followed
        return data


Predicate = Callable[[Draft], bool]


@dataclass(frozen=True)
class Followed:
    """A value that follows earlier answers, with why: `reason` names a line of prompts' [follows]
    table, formatted with `fields` ("for Prodigy")."""

    value: Any
    reason: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Correction:
    """A typed answer that is almost surely meant as another value: the wizard offers it."""

    value: Any
    reason: str  # names a line of prompts' [errors] table, formatted with `fields`
    fields: dict[str, str] = field(default_factory=dict)


def always(draft: Draft) -> bool:
    return True


@dataclass(frozen=True)
class Question:
    path: str
    kind: Kind
    when: Predicate = always
    #: also asked after loading a saved config (as LoRA_Easy_Training_Scripts did); everything else comes from the file
    short: bool = False
    #: asked only once the user opts into advanced settings ("ask.advanced")
    advanced: bool = False
    #: the advanced group it belongs to (a heading from prompts' [groups] is shown when it starts)
    group: str | None = None
    #: SELECT: the allowed values, in the order shown
    choices: tuple[Any, ...] = ()
    #: the value proposed when the question has no answer yet; None: the config's current value
    propose: Callable[[Draft], Any] | None = None
    #: an empty answer means "unset" (None)
    optional: bool = False
    #: CONFIRM questions that stand for a field value: yes gives `yes`, no gives `no(draft)`
    yes: Any = None
    no: Callable[[Draft], Any] | None = None
    #: turns the typed text into what the config field takes (before the model validates it)
    parse: Callable[[str], Any] | None = None
    #: checks the model cannot make (a path exists, a checkpoint is readable); raises AnswerError
    check: Callable[[Any], None] | None = None
    #: values for the `detail` line of the question's text (e.g. the detected model family)
    detail: Callable[[Draft], dict[str, str] | None] | None = None
    #: checks against the other answers (a block list's length for the model family); AnswerError
    fits: Callable[[Draft, Any], None] | None = None
    #: after the answer, show the per-block values that result (a block list)
    shows_blocks: bool = False
    #: the value earlier answers call for (an optimizer's learning rate), proposed while the config
    #: being edited leaves the field at its default
    follows: Callable[[Draft], Followed | None] | None = None
    #: an answer that is almost surely a mistake for another value, offered instead (a 10_name folder
    #: given for its parent)
    corrects: Callable[[Any], Correction | None] | None = None
    #: a warning about an accepted answer that the user confirms (a learning rate far off its range)
    confirm: Callable[[Draft, Any], str | None] | None = None

    def proposal(self, draft: Draft) -> Any:
        if self.follows is not None and field_value(draft.base, self.path) == field_default(self.path):
            followed = self.follows(draft)
            if followed is not None:
                return followed.value
        return self.propose(draft) if self.propose else draft.value(self.path)

    def says_yes(self, value: Any) -> bool:
        """How a CONFIRM question was answered, for a value of its field (SD2 -> yes)."""
        return value == self.yes if self.yes is not None else bool(value)


def question_named(path: str) -> Question:
    # imported here: the question lists are built from this module's classes
    from wizard.questions import QUESTIONS_BY_PATH

    return QUESTIONS_BY_PATH[path]


# ---- config field helpers ---------------------------------------------------------------------


def field_value(cfg: TrainConfig, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(cfg, section), name)


def field_default(path: str) -> Any:
    section, name = path.split(".")
    return section_model(section).model_fields[name].get_default(call_default_factory=True)
