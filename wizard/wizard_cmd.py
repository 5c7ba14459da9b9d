"""The wizard as a command (`lora-wizard` with no command): an unfinished queue offered first, then
the questions (wizard/flow.py), then the configs trained through the same journal as `queue`
(wizard/runs.py), so every Ctrl-C can be carried on: in the questions, from the draft the next start
offers; during a run, with `queue --resume` or the next start; configs queued and not trained yet
are recorded in the journal as pending."""

from __future__ import annotations

import sys

from engine.events import Outcome
from wizard import time_cmd
from wizard.screen import Screen


def has_terminal() -> bool:
    """Whether questions can be asked: a terminal on stdin, or an input given to prompt_toolkit's
    session (the tests' pipe input)."""
    from prompt_toolkit.application.current import get_app_session

    if getattr(get_app_session(), "_input", None) is not None:
        return True
    return sys.stdin is not None and sys.stdin.isatty()


def run_wizard(screen: Screen, trainer) -> int:
    from wizard.flow import WizardCancelled, run_interactive
    from wizard.runs import offer_unfinished_queue, record_queued, wizard_queue

    if not has_terminal():
        screen.say(screen.texts["ui"]["no_terminal"].format(command=screen.command), "red")
        return Outcome.BAD_INPUT
    try:
        code = offer_unfinished_queue(screen, trainer)
        if code is not None:
            return code
        outcome = run_interactive(screen.console, lang=screen.lang, command=screen.command)
    except WizardCancelled as cancelled:
        if cancelled.saved:
            record_queued(screen, cancelled.saved)
        return Outcome.CANCELLED
    except EOFError:  # the input ended (a closed pipe): no one to answer the questions
        screen.say(screen.texts["ui"]["no_terminal"].format(command=screen.command), "red")
        return Outcome.BAD_INPUT
    if outcome.action != "train":
        return Outcome.OK
    try:
        timing = time_cmd.TimeOptions(finish_by=time_cmd.ask_finish_by(screen.texts))
    except KeyboardInterrupt:  # the configs are saved: recorded as pending, as a Ctrl-C in the questions
        record_queued(screen, outcome.saved)
        return Outcome.CANCELLED
    return wizard_queue(screen, outcome.saved, trainer, timing)
