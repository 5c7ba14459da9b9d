"""Turning typed text into field values, and the checks the config model cannot make (a path
exists, a checkpoint is readable). Each refusal is an `AnswerError` naming a message of prompts'
[errors] table, so the wording stays in prompts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config.schema import DEMO_MODEL, SAMPLE_DATASET


class AnswerError(ValueError):
    """An answer the wizard refuses. `key` names a message in prompts' [errors] table, formatted with
    `fields`; without a key, `fields["message"]` is shown as it is (messages from the engine)."""

    def __init__(self, key: str | None, **fields: Any) -> None:
        super().__init__(key or fields.get("message", ""))
        self.key = key
        self.fields = fields


def clean_path(text: str) -> str:
    """A typed or dropped path: no surrounding blanks or quotes, ~ expanded; keywords untouched."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if not text or text.startswith("builtin:"):
        return text
    return str(Path(text).expanduser())


def parse_resolution(text: str) -> Any:
    """"512" is one side; "768x512" or "768,512" is width and height."""
    parts = text.replace("x", " ").replace("X", " ").replace(",", " ").split()
    return tuple(parts) if len(parts) == 2 else text.strip()


def check_base_model(value: str) -> None:
    if value == DEMO_MODEL:
        return
    from engine.errors import ModelError
    from engine.models.detect import detect_family

    try:
        detect_family(Path(value))  # the header only: cheap, and it says what is wrong
    except ModelError as err:
        raise AnswerError(None, message=str(err)) from err


def check_dataset(value: str) -> None:
    if value != SAMPLE_DATASET:
        check_dataset_folder(value, "dataset.img_folder")


def check_reg_folder(value: Any) -> None:
    check_dataset_folder(value, "dataset.reg_img_folder")


def check_dataset_folder(value: Any, field: str) -> None:
    """The folder's layout, as the dataset lint checks it (no image is opened). A `10_name` folder
    given for its parent passes here: the question offers the parent (Question.corrects)."""
    from engine.data.lint import folder_layout_problems, parent_if_concept_folder
    from engine.problems import errors, render

    check_dir(value)
    if parent_if_concept_folder(Path(value)) is not None:
        return
    problems = errors(folder_layout_problems(Path(value), field))
    if problems:
        raise AnswerError(None, message=render(problems[0]))


def check_dir(value: Any) -> None:
    path = Path(value)
    if not path.exists():
        raise AnswerError("not_found", path=str(value))
    if not path.is_dir():
        raise AnswerError("not_a_folder", path=str(value))


def check_file(value: Any) -> None:
    path = Path(value)
    if not path.exists():
        raise AnswerError("not_found", path=str(value))
    if not path.is_file():
        raise AnswerError("not_a_file", path=str(value))


def check_output_folder(value: Any) -> None:
    # it is created when training starts; only an existing file in its place is a problem
    if Path(value).is_file():
        raise AnswerError("not_a_folder", path=str(value))


def check_json_file(value: Any) -> None:
    """A config file the loader reads: JSON, or an sd-scripts/LETS TOML."""
    check_file(value)
    if Path(value).suffix.lower() not in (".json", ".toml"):
        raise AnswerError("not_json", path=str(value))


#: endings of a typed answer that names a prompt file rather than being a prompt
PROMPT_FILE_SUFFIXES = (".txt", ".toml", ".json")


def parse_sample_prompt(text: str) -> Any:
    """A prompt file (a Path, every line checked as training will read it) or one prompt typed in
    (a str, checked as a line of a prompt file: `mychar, red dress --n lowres --s 28`)."""
    from engine.errors import ConfigError
    from engine.run.prompts import parse_prompt_file, parse_prompt_line

    candidate = clean_path(text)
    path = Path(candidate)
    try:
        if path.is_file():
            parse_prompt_file(path)
            return path
        if candidate.lower().endswith(PROMPT_FILE_SUFFIXES):
            raise AnswerError("not_found", path=candidate)
        parse_prompt_line(text, "this prompt")
    except ConfigError as err:
        raise AnswerError(None, message=str(err)) from None
    return text.strip()
