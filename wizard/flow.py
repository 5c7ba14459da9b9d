"""The interactive wizard from the first question to a saved config.

    load a saved config? -> the questions (all, or the short list after a load) -> review table
    -> Train now | Add to queue and configure another | Save config only | Edit an answer
       | Sweep a setting (one run per value, then train, queue or save them)

Every finished config is saved (never overwriting) and its path shown. Ctrl-C at any question offers
to save the draft, then raises `WizardCancelled`. Nothing here imports torch: the wizard opens at
once, and the engine is imported by whoever trains the returned configs.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import questionary
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape

from engine.config.schema import TrainConfig
from engine.errors import ConfigError, LoraWizardError
from engine.fileio import atomic_write_text, next_free_path
from engine.problems import Problem, errors, render, warnings
from prompts import load_prompts
from wizard import ask
from wizard.dataset_step import IMAGE_FOLDER, show_dataset
from wizard.questions import (
    LOAD_QUESTIONS,
    Draft,
    Question,
    block_family,
    block_values,
    detected_family,
    question_list,
)
from wizard.review import block_table, review_table, show_value
from wizard.sweep_step import sweep_from

TRAIN, QUEUE, SAVE, EDIT, SWEEP = "train", "queue", "save", "edit", "sweep"
ACTIONS = (TRAIN, QUEUE, SAVE, EDIT, SWEEP)
BACK = "back"


@dataclass
class WizardOutcome:
    """What the user chose for the configs made in this session (all already saved, in order)."""

    action: Literal["train", "save"]
    configs: list[TrainConfig]
    saved: list[Path]


class WizardCancelled(LoraWizardError):
    """The user left with Ctrl-C. `saved` lists every file written before leaving (configs queued
    earlier in the session and the draft, when kept); the command line exits with 130."""

    exit_code = 130

    def __init__(self, message: str, saved: list[Path]) -> None:
        super().__init__(message)
        self.saved = saved


def run_interactive(
    console: Console, *, saved_configs_dir: Path = Path("saved_configs")
) -> WizardOutcome:
    """Ask for one config or a queue of them; save each one into `saved_configs_dir`."""
    texts = load_prompts("en")
    ui = texts["ui"]
    configs: list[TrainConfig] = []
    saved: list[Path] = []
    while True:
        draft = None
        try:
            draft = start_draft(console, texts)
            cfg = complete(draft, console, texts)
            action, cfg = review(draft, cfg, console, texts)
            made = [cfg]
            if action == SWEEP:  # one run per value of a setting (wizard/sweep_step.py)
                action, made = sweep_from(cfg, console, texts)
        except KeyboardInterrupt:
            raise leave(draft, console, texts, saved_configs_dir, saved) from None
        for cfg in made:
            configs.append(cfg)
            saved.append(save_config(cfg, saved_configs_dir))
            console.print(ui["saved"].format(path=escape(str(saved[-1]))))
        if action != QUEUE:
            return WizardOutcome(action, configs, saved)  # type: ignore[arg-type]
        console.print(ui["queued"].format(count=len(configs)))


def start_draft(console: Console, texts: dict[str, Any]) -> Draft:
    """The first question: start from the defaults, or from a saved config (then the short list)."""
    load_json, load_path = LOAD_QUESTIONS
    start = Draft(TrainConfig(), LOAD_QUESTIONS)
    if not ask.ask_question(load_json, start, texts, console):
        return Draft(TrainConfig(), question_list(loaded=False))
    from engine.config.io import DEFAULT_SKIP, read_config

    while True:
        path = Path(ask.ask_question(load_path, start, texts, console))
        try:
            loaded = read_config(path, skip=DEFAULT_SKIP)  # load_config, plus the import's notes
        except ConfigError as err:
            console.print(f"[red]{escape(str(err))}[/]")
            start.answers[load_path.path] = str(path)  # asked again, with the path to correct
            continue
        console.print(texts["ui"]["loaded"].format(path=escape(str(path))))
        for note in loaded.notes:  # e.g. the LETS keys an import left out, and why
            console.print(f"  [yellow]{escape(note)}[/]")
        return Draft(loaded.config, question_list(loaded=True))


def fill(draft: Draft, console: Console, texts: dict[str, Any]) -> None:
    """Ask, in order, every question that applies and has no answer yet; forget the answers of
    questions that no longer apply (a gate switched off, advanced settings turned off). An advanced
    group starts with its heading; a block list is followed by the per-block values it gives."""
    group = None
    for q in draft.questions:
        if not draft.in_play(q) or not q.when(draft):
            draft.answers.pop(q.path, None)
        elif q.path not in draft.answers:
            if q.group and q.group != group:
                console.print(f"\n[bold]{escape(texts['groups'][q.group])}[/]")
                group = q.group
            draft.answer(q, ask.ask_question(q, draft, texts, console))
            if q.shows_blocks:
                show_blocks(draft, console, texts)
            if q.path == IMAGE_FOLDER:
                show_dataset(draft, console, texts)


def show_blocks(draft: Draft, console: Console, texts: dict[str, Any]) -> None:
    """The per-block values the block answers give, as a table (nothing while none is set)."""
    values = block_values(draft)
    if values:
        console.print(block_table(block_family(draft), values, texts["blocks"]))


def complete(draft: Draft, console: Console, texts: dict[str, Any]) -> TrainConfig:
    """Fill the draft, then check it with the rulebook, against this machine and the model's
    family, and the dataset folders' layout; a broken rule is shown and the question it names is
    asked again."""
    while True:
        fill(draft, console, texts)
        cfg, problems = ask.check_draft(draft.to_data())
        if cfg is not None:
            problems = errors(run_problems(cfg, draft))
            if not problems:
                return cfg
        console.print(f"[red]{escape(texts['ui']['problems'])}[/]")
        for problem in problems:
            console.print(f"[red]  - {escape(render(problem))}[/]")
        q = question_named_in(problems, draft.active()) or pick_question(draft, texts)
        if q is not None:
            draft.answer(q, ask.ask_question(q, draft, texts, console))


def run_problems(cfg: TrainConfig, draft: Draft) -> list[Problem]:
    """What preflight will say about this config without reading the images: the rulebook with the
    machine, the model family (from the file's header) and the process count, and the layout of the
    dataset folders (each problem named by the folder's field, so its question is asked again)."""
    from engine.config.machine import Facts, this_machine_at_a_glance
    from engine.config.rules import check
    from engine.data.lint import folder_layout_problems
    from engine.run.distributed import launched_processes

    problems = check(cfg, Facts(this_machine_at_a_glance(), detected_family(draft), launched_processes()))
    for field_name, folder in (("dataset.img_folder", cfg.dataset.img_folder), ("dataset.reg_img_folder", cfg.dataset.reg_img_folder)):
        if folder is None or str(folder).startswith("builtin:"):
            continue
        for p in folder_layout_problems(Path(folder), field_name):
            problems.append(Problem(field_name, f"{p.where}: {p.problem}", p.fix, level=p.level))
    return problems


def question_named_in(problems: list[Problem], questions: list[Question]) -> Question | None:
    """The question of the field a problem is about; else of a field its words name."""
    by_path = {q.path: q for q in questions}
    for problem in problems:
        if problem.where in by_path:
            return by_path[problem.where]
    for problem in problems:
        text = render(problem)
        for q in questions:
            # whole dotted names only: "dataset.cache_latents" must not match "..._to_disk"
            if re.search(rf"(?<![\w.]){re.escape(q.path)}(?![\w])", text):
                return q
    return None


def review(
    draft: Draft, cfg: TrainConfig, console: Console, texts: dict[str, Any]
) -> tuple[str, TrainConfig]:
    """Show the config; return the chosen action with the (possibly edited) config."""
    ui = texts["ui"]
    while True:
        console.print(review_table(cfg, texts["review"], follows_text(draft, texts)))
        for problem in warnings(run_problems(cfg, draft)):
            console.print(f"[yellow]{escape(ui['note'])}[/] {escape(render(problem))}", highlight=False)
        choices = [questionary.Choice(texts["actions"][a], value=a) for a in ACTIONS]
        action = questionary.select(ui["action"], choices=choices).unsafe_ask()
        if action != EDIT:
            return action, cfg
        q = pick_question(draft, texts)
        if q is not None:
            draft.answer(q, ask.ask_question(q, draft, texts, console))
            if q.shows_blocks:
                show_blocks(draft, console, texts)
            if q.path == IMAGE_FOLDER:
                show_dataset(draft, console, texts)
            cfg = complete(draft, console, texts)


def follows_text(draft: Draft, texts: dict[str, Any]) -> dict[str, str]:
    """field -> why its value follows an earlier answer ("for Prodigy"), for the review."""
    return {path: texts["follows"][f.reason].format(**f.fields) for path, f in draft.derived.items()}


def pick_question(draft: Draft, texts: dict[str, Any]) -> Question | None:
    """The question to answer again, chosen from those asked (None: back to the review)."""
    labels = texts["review"]
    choices = [
        questionary.Choice(
            f"{texts['questions'][q.path]['message']}  ({show_value(draft.value(q.path), labels)})",
            value=q,
        )
        for q in draft.active()
    ]
    choices.append(questionary.Choice(texts["ui"]["back"], value=BACK))
    picked = questionary.select(texts["ui"]["edit"], choices=choices).unsafe_ask()
    return picked if isinstance(picked, Question) else None


def leave(
    draft: Draft | None, console: Console, texts: dict[str, Any], folder: Path, saved: list[Path]
) -> WizardCancelled:
    """After Ctrl-C: offer to keep the draft (Ctrl-C again leaves without saving)."""
    ui = texts["ui"]
    if draft is not None and draft.answers:
        console.print(ui["interrupted"])
        try:
            keep = questionary.confirm(ui["save_draft"], default=True).unsafe_ask()
        except KeyboardInterrupt:
            keep = False
        if keep:
            saved = [*saved, save_draft(draft, folder)]
            console.print(ui["saved"].format(path=escape(str(saved[-1]))))
    return WizardCancelled(ui["cancelled"], saved)


def save_draft(draft: Draft, folder: Path) -> Path:
    """A draft that is already a valid config is saved as one; otherwise its raw values go to
    `<name>-<time>.draft.json`, to be fixed by hand or answered again."""
    data = draft.to_data()
    cfg, _ = ask.check_draft(data)
    if cfg is not None:
        return save_config(cfg, folder)
    name = draft.value("saving.output_name") or "draft"
    path = next_free_path(Path(folder) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.draft.json")
    return atomic_write_text(path, json.dumps(to_jsonable_python(data), indent=2) + "\n")


def save_config(cfg: TrainConfig, folder: Path) -> Path:
    from engine.config.io import save_config as save

    return save(cfg, Path(folder))


__all__ = ["WizardCancelled", "WizardOutcome", "run_interactive"]
