"""One question at a time: a `Question` becomes a questionary prompt whose answers are checked
against the config model before they are accepted.

Answers are validated by pydantic with the very field the JSON loader uses (its type, bounds and
field validators), so the wizard and a saved file accept exactly the same values. Rules between
fields are checked once the draft is complete (`check_draft`). Every prompt takes Esc or Ctrl-B
for "back" (wizard/prompt_kit.py): it raises GoBack, and the flow asks the previous question again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import questionary
from pydantic import ValidationError
from rich.console import Console

from engine.config.schema import TrainConfig, section_model
from engine.fileio import atomic_write_text, next_free_path
from engine.problems import Problem, render
from wizard.checks import AnswerError
from wizard.prompt_kit import confirm, fit_message, ready, refusal, select
from wizard.questions import ASK, Draft, Kind, Question, field_default
from wizard.review import show_value
from wizard.screen import say, width_of, wrap


def ask_question(q: Question, draft: Draft, texts: dict[str, Any], console: Console) -> Any:
    """Ask `q` until the answer is valid and return the value for its field (a bool for a gate).

    An answer that is almost surely meant as another value is offered that value (a `10_name`
    folder: its parent); an answer the rulebook warns about (a learning rate far outside the
    optimizer's range) is kept only when the user confirms it; otherwise the question comes again.
    Raises KeyboardInterrupt on Ctrl-C (questionary's `unsafe_ask`) and GoBack on Esc/Ctrl-B; the
    flow decides what then.
    """
    ui = texts["ui"]
    show_help(q, draft, texts, console)
    while True:
        value = ask_once(q, draft, texts)
        correction = q.corrects(value) if q.corrects else None
        if correction is not None:
            note(console, texts["errors"][correction.reason].format(**correction.fields))
            if not confirm(ui["use_instead"].format(value=correction.value), True, ui).unsafe_ask():
                continue
            value = correction.value
        warning = q.confirm(draft, value) if q.confirm else None
        if warning is not None:
            note(console, warning)
            if not confirm(ui["keep_anyway"], False, ui).unsafe_ask():
                continue
        if q.kind is Kind.PROMPTS and isinstance(value, str):
            value = write_prompt_file(value, draft)
        return value


def note(console: Console, text: str) -> None:
    say(console, wrap(text, width_of(console), "  "), "yellow")


def ask_once(q: Question, draft: Draft, texts: dict[str, Any]) -> Any:
    """One prompt for `q`, its answer checked as it is typed."""
    text = texts["questions"][q.path]
    current = draft.shown_value(q)

    if q.kind is Kind.CONFIRM:
        answer = confirm(text["message"], q.says_yes(current), texts["ui"]).unsafe_ask()
        if q.yes is None:
            return answer
        return q.yes if answer else q.no(draft)  # type: ignore[misc]

    if q.kind is Kind.SELECT:
        titles = text.get("choices", {})
        offered = q.choices
        choices = [questionary.Choice(titles.get(str(v), str(v)), value=v) for v in offered]
        if current not in offered:  # a loaded config may hold a value the list does not offer
            choices.append(questionary.Choice(str(current), value=current))
        return select(text["message"], choices, texts["ui"], current).unsafe_ask()

    def validate(typed: str) -> bool | str:
        try:
            parse_answer(q, typed, draft)
        except AnswerError as err:
            return refusal(error_text(err, texts))
        return True

    prompt = questionary.path if q.kind in (Kind.FILE, Kind.DIR) else questionary.text
    extra = {"only_directories": True} if q.kind is Kind.DIR else {}
    typed = ready(prompt(fit_message(text["message"]), default=default_text(current), validate=validate, **extra)).unsafe_ask()
    return parse_answer(q, typed, draft)


def show_help(q: Question, draft: Draft, texts: dict[str, Any], console: Console) -> None:
    """The question's help line, its facts line, and for an advanced setting its default."""
    text = texts["questions"][q.path]
    lines = [text["help"]] if text.get("help") else []
    facts = q.detail(draft) if q.detail else None
    if facts and text.get("detail"):
        lines.append(text["detail"].format(**facts))
    if q.advanced and not q.path.startswith(ASK):
        lines.append(texts["ui"]["default"].format(value=show_value(field_default(q.path), texts["review"])))
    for line in lines:
        say(console, wrap(line, width_of(console), "  "), "dim")


def parse_answer(q: Question, typed: str, draft: Draft | None = None) -> Any:
    """The value a typed answer stands for; AnswerError with the reason when it is not acceptable.

    With the draft, answers are also checked against the other answers (`Question.fits`). A prompt
    typed in (Kind.PROMPTS) stays text here; `ask_question` writes it into a prompt file."""
    typed = typed.strip()
    if not typed:
        if q.optional:
            return None
        raise AnswerError("empty")
    raw: Any = q.parse(typed) if q.parse else typed
    if q.path.startswith(ASK) or (q.kind is Kind.PROMPTS and isinstance(raw, str)):
        value = raw
    else:
        value = validate_field(q.path, raw)
    if q.check:
        q.check(value)
    if q.fits and draft is not None:
        q.fits(draft, value)
    return value


def write_prompt_file(prompt: str, draft: Draft) -> Path:
    """A prompt typed in, as the one-line prompt file the config points at (next to the saved
    configs, named after the output, never over another file)."""
    name = draft.value("saving.output_name") or "samples"
    path = next_free_path(Path(draft.folder) / "prompts" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    return atomic_write_text(path, prompt + "\n").resolve()


def validate_field(path: str, raw: Any) -> Any:
    """Validate one value exactly as the config model does when a file is loaded.

    Assignment validation on a bare section instance runs the field's type, its bounds and its
    field validators (a TypeAdapter of the annotation would miss the latter, e.g. resolution's
    minimum side or output_name's forbidden characters).
    """
    section, name = path.split(".")
    model = section_model(section)
    holder = model.model_construct()
    try:
        model.__pydantic_validator__.validate_assignment(holder, name, raw)
    except ValidationError as err:
        from engine.config.io import field_problem

        problem = field_problem(path, raw, [dict(e) for e in err.errors()])
        raise AnswerError(None, message=render(problem, with_where=False)) from err
    return getattr(holder, name)


def error_text(err: AnswerError, texts: dict[str, Any]) -> str:
    if err.key is None:
        return str(err.fields["message"])
    return texts["errors"][err.key].format(**err.fields)


def check_draft(data: dict[str, Any]) -> tuple[TrainConfig | None, list[Problem]]:
    """The finished config, or the problems that stop it: the same field checks and the same
    rulebook as a file's."""
    from engine.config.io import validated

    return validated(data)


def default_text(value: Any) -> str:
    """How a value is pre-filled in a text prompt (so that Enter keeps it)."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, list):  # a block list: "1, 0.5, 0"
        return ", ".join(default_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
