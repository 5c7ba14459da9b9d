"""What every questionary prompt of the wizard gets on top of questionary's own: the keys that go
back to the previous question, and a refusal message that wraps instead of being cut.

Back is Esc, or Ctrl-B where Esc is slow (a terminal waits half a second to tell a lone Esc from
the start of an arrow key's sequence); it works in every prompt kind questionary makes (text, path,
confirm, select), in a terminal and in pipe input. prompt_toolkit shows a refusal in a toolbar one
line high (`ValidationToolbar`), so "... is not a Stable Diffusion 1/2/XL checkpoint:" lost its
reason at 80 columns; here the toolbar grows to the lines of the message, wrapped between words.
"""

from __future__ import annotations

from typing import Any

import questionary
import questionary.prompts.confirm as confirm_prompt
from prompt_toolkit.application import get_app
from prompt_toolkit.filters import to_filter
from prompt_toolkit.key_binding import KeyBindings, merge_key_bindings
from prompt_toolkit.layout.containers import Window
from prompt_toolkit.layout.controls import FormattedTextControl

from wizard.screen import wrap


class GoBack(Exception):
    """Raised by a prompt when the user asks for the previous question."""


BACK_KEYS = ("escape", "c-b")


def ready(question: Any) -> Any:
    """The questionary question with the back keys and a refusal toolbar that wraps."""
    bindings = KeyBindings()
    for key in BACK_KEYS:
        bindings.add(key, eager=True)(_go_back)
    app = question.application
    app.key_bindings = merge_key_bindings([app.key_bindings, bindings]) if app.key_bindings else bindings
    for container in app.layout.walk():
        if _is_validation_toolbar(container):
            container.height = None  # as high as its text
            container.wrap_lines = to_filter(True)
    return question


def confirm(message: str, default: bool, ui: dict[str, str]) -> Any:
    """A yes/no question in the user's language: its "(Y/n)" and the "Yes"/"No" shown once answered
    come from prompts' [ui] (the keys stay y and n). questionary writes the answer with the module's
    own YES/NO words; they are set here, where every yes/no question of the wizard is made."""
    confirm_prompt.YES, confirm_prompt.NO = ui["answer_yes"], ui["answer_no"]
    instruction = ui["yes_no"] if default else ui["no_yes"]
    return ready(questionary.confirm(fit_message(message), default=default, instruction=instruction + " "))


def select(message: str, choices: list, ui: dict[str, str], default: Any = None, *, back: bool = True) -> Any:
    """A list to choose from, its "(use the arrow keys)" in the user's language; with `back`, Esc
    and Ctrl-B go back (GoBack)."""
    question = questionary.select(fit_message(message), choices=choices, default=default, instruction=ui["arrows"])
    return ready(question) if back else question


#: room kept on a question's last line for the answer typed or proposed after it
ANSWER_ROOM = 24


def fit_message(message: str) -> str:
    """A question wrapped between words to the terminal ("? " and the answer after it), its
    further lines indented: prompt_toolkit would break a long question in the middle of a word."""
    columns = terminal_columns()
    if columns is None:
        return message
    lines = wrap(message, max(20, columns - 2 - ANSWER_ROOM))
    return "\n  ".join(lines)


def terminal_columns() -> int | None:
    from prompt_toolkit.application.current import get_app_session

    try:
        return get_app_session().output.get_size().columns
    except Exception:  # noqa: BLE001 - no terminal to measure: leave the text as it is
        return None


def refusal(message: str) -> str:
    """A refusal message wrapped to the terminal the prompt runs in (for the toolbar)."""
    try:
        columns = get_app().output.get_size().columns
    except Exception:  # noqa: BLE001 - no running app (a test calls the validator): no wrapping
        return message
    return "\n".join(wrap(message, max(20, columns - 1)))


def _is_validation_toolbar(container: Any) -> bool:
    if not isinstance(container, Window) or not isinstance(container.content, FormattedTextControl):
        return False
    return "ValidationToolbar" in getattr(container.content.text, "__qualname__", "")


def _go_back(event) -> None:
    event.app.exit(exception=GoBack(), style="class:aborting")
