"""Driving the wizard in-process through prompt_toolkit's pipe input.

A `Script` says what to type at each question, by the question's config path, so the tests do not
depend on how many questions come before; every prompt not named gets Enter (its default). The keys
for a question are queued just before it is asked, which also records the order of the questions.
`before` is typed ahead of everything (the answers to what the wizard asks before its questions:
a kept draft, an unfinished queue); `finish_by` answers the question asked after "train" (Enter: no
time limit).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from wizard import ask, flow, time_cmd

DOWN, ENTER, CTRL_C, CTRL_U, CTRL_B = "\x1b[B", "\r", "\x03", "\x15", "\x02"
# the functions the script wraps, taken before any test replaced them (a test may run the wizard twice)
REAL_ASK, REAL_TABLE, REAL_PICK = ask.ask_question, flow.review_table, flow.pick_question
REAL_FINISH_BY = time_cmd.ask_finish_by


def typed(text: str) -> str:
    """Clear the pre-filled default, type `text`, press Enter."""
    return CTRL_U + text + ENTER


@dataclass
class Script:
    answers: dict[str, str | list[str]] = field(default_factory=dict)  # keys per question path
    actions: list[str] = field(default_factory=lambda: ["train"])  # one per review ("ctrl_c": leave, keeping a draft)
    edits: list[str] = field(default_factory=list)  # the question picked at each "edit"
    before: str = ""  # typed before the first question
    finish_by: str = ENTER  # the keys for "finish by" after "train"
    asked: list[str] = field(default_factory=list)

    def keys_for(self, path: str) -> str:
        keys = self.answers.get(path, ENTER)
        if isinstance(keys, list):
            return keys.pop(0) if keys else ENTER
        return keys


@dataclass
class Run:
    outcome: Any
    output: str
    asked: list[str]
    error: BaseException | None = None


@contextmanager
def scripted(script: Script, monkeypatch) -> Iterator[None]:
    """Pipe input for the wizard, fed by `script` at each question, review and edit list."""
    real_ask, real_table, real_pick = REAL_ASK, REAL_TABLE, REAL_PICK
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):

        def scripted_ask(q, draft, texts, console):
            script.asked.append(q.path)
            inp.send_text(script.keys_for(q.path))
            return real_ask(q, draft, texts, console)

        def scripted_table(cfg, labels, *more):
            action = script.actions.pop(0)
            inp.send_text(CTRL_C + "y" if action == "ctrl_c" else DOWN * flow.ACTIONS.index(action) + ENTER)
            return real_table(cfg, labels, *more)

        def scripted_pick(draft, texts):
            inp.send_text(DOWN * [q.path for q in draft.active()].index(script.edits.pop(0)) + ENTER)
            return real_pick(draft, texts)

        def scripted_finish_by(texts):
            inp.send_text(script.finish_by)
            return REAL_FINISH_BY(texts)

        monkeypatch.setattr(ask, "ask_question", scripted_ask)
        monkeypatch.setattr(flow, "review_table", scripted_table)
        monkeypatch.setattr(flow, "pick_question", scripted_pick)
        monkeypatch.setattr(time_cmd, "ask_finish_by", scripted_finish_by)
        inp.send_text(script.before)
        yield


def run_wizard(
    script: Script, folder: Path, monkeypatch, *, lang: str = "en", width: int = 120,
    entry: Callable[..., Any] | None = None,
) -> Run:
    """The wizard's questions (flow.run_interactive, saving into `folder`) as the script answers them."""
    out = io.StringIO()
    with scripted(script, monkeypatch):
        console = Console(file=out, width=width)
        try:
            outcome = flow.run_interactive(console, saved_configs_dir=folder, lang=lang, command="lora-wizard")
        except flow.WizardCancelled as err:
            return Run(None, out.getvalue(), script.asked, err)
    return Run(outcome, out.getvalue(), script.asked)
