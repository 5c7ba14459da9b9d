"""The interactive wizard from the first question to a saved config.

    a kept draft? (continue it) -> load a saved config? -> the questions (all, or the short list
    after a load) -> review table -> Train now | Add to queue and configure another |
    Save config only | Edit an answer | Sweep a setting (one run per value, then train, queue or
    save them: wizard/sweep_step.py)

Esc (or Ctrl-B) at a question goes back to the one before (wizard/prompt_kit.py). Every finished
config is saved (never overwriting) and its path shown. Ctrl-C at any question offers to keep the
draft (wizard/drafts.py), which the next start offers to continue from that question, then raises
`WizardCancelled`. Nothing here imports torch: the wizard opens at once, and the engine is imported
by whoever trains the returned configs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import questionary
from rich.console import Console

from engine.config.schema import TrainConfig
from engine.errors import ConfigError, LoraWizardError
from engine.problems import Problem, errors, render, warnings
from prompts import load_prompts
from wizard import ask
from wizard.dataset_step import IMAGE_FOLDER, show_dataset
from wizard.drafts import KeptDraft, keep_draft, kept_drafts, read_draft
from wizard.edit_list import pick_question
from wizard.prompt_kit import GoBack, confirm, select
from wizard.questions import (
    LOAD_QUESTIONS,
    Draft,
    Question,
    block_family,
    block_values,
    detected_family,
    question_list,
)
from wizard.review import block_table, changed_from_file, review_table, show_review
from wizard.screen import Screen
from wizard.sweep_step import sweep_from

TRAIN, QUEUE, SAVE, EDIT, SWEEP = "train", "queue", "save", "edit", "sweep"
ACTIONS = (TRAIN, QUEUE, SAVE, EDIT, SWEEP)
CONTINUE, FRESH, DISCARD = "continue", "fresh", "discard"


@dataclass
class WizardOutcome:
    """What the user chose for the configs made in this session (all already saved, in order)."""

    action: Literal["train", "save"]
    configs: list[TrainConfig]
    saved: list[Path]


class WizardCancelled(LoraWizardError):
    """The user left with Ctrl-C. `saved` lists the configs queued earlier in the session (saved,
    not trained: the command line records them in the queue's journal) and `draft` the draft kept;
    the command line exits with 130."""

    exit_code = 130

    def __init__(self, message: str, saved: list[Path], draft: Path | None = None) -> None:
        super().__init__(message)
        self.saved = saved
        self.draft = draft


class StartOver(Exception):
    """"Back" at the first question of a config: ask "load a saved config?" again."""


def run_interactive(
    console: Console,
    *,
    saved_configs_dir: Path = Path("saved_configs"),
    lang: str = "en",
    command: str = "lora-wizard",
) -> WizardOutcome:
    """Ask for one config or a queue of them; save each one into `saved_configs_dir`."""
    screen = Screen(console, load_prompts(lang), command, lang)
    ui = screen.texts["ui"]
    folder = Path(saved_configs_dir)
    configs: list[TrainConfig] = []
    saved: list[Path] = []
    kept = offer_draft(screen, folder)
    while True:
        draft = None
        try:
            draft = kept.draft if kept else start_draft(screen, folder)
            cfg = complete(draft, screen, may_start_over=kept is None)
            action, cfg = review(draft, cfg, screen)
            made = [cfg]
            if action == SWEEP:
                action, made = sweep_from(cfg, screen)
        except StartOver:
            continue
        except KeyboardInterrupt:
            raise leave(draft, screen, folder, saved, kept) from None
        if kept is not None:
            kept.path.unlink(missing_ok=True)  # continued to the end: the draft is this config now
            kept = None
        for cfg in made:
            configs.append(cfg)
            saved.append(save_config(cfg, folder))
            screen.say(ui["saved"].format(path=saved[-1]), "green")
        if action == SAVE:
            screen.say(ui["train_later"])
            for path in saved[-len(made):]:
                screen.command_line(f"{command} replay {path}")
        if action != QUEUE:
            return WizardOutcome(action, configs, saved)  # type: ignore[arg-type]
        screen.say(ui["queued"].format(count=len(configs)))


def offer_draft(screen: Screen, folder: Path) -> KeptDraft | None:
    """The newest kept draft, when the user continues it (or None: a new config)."""
    ui = screen.texts["ui"]
    drafts = kept_drafts(folder)
    if not drafts:
        return None
    try:
        kept = read_draft(drafts[0], folder)
    except ConfigError as err:
        screen.say(ui["draft_unreadable"].format(error=err), "yellow")
        return None
    asking = kept.draft.asking
    where = screen.texts["questions"][asking]["message"] if asking in screen.texts["questions"] else ui["at_review"]
    screen.say(ui["draft_found"].format(saved=kept.saved, question=where, path=kept.path))
    choices = [
        questionary.Choice(ui["draft_continue"], value=CONTINUE),
        questionary.Choice(ui["draft_fresh"], value=FRESH),
        questionary.Choice(ui["draft_discard"], value=DISCARD),
    ]
    choice = select(ui["draft_what"], choices, ui, back=False).unsafe_ask()
    if choice == DISCARD:
        kept.path.unlink(missing_ok=True)
    return kept if choice == CONTINUE else None


def start_draft(screen: Screen, folder: Path) -> Draft:
    """The first question: start from the defaults, or from a saved config (then the short list)."""
    texts, console = screen.texts, screen.console
    load_json, load_path = LOAD_QUESTIONS
    start = Draft(TrainConfig(), LOAD_QUESTIONS, folder=folder)
    screen.say(texts["ui"]["keys"], "dim")
    while True:
        try:
            if not ask.ask_question(load_json, start, texts, console):
                return Draft(TrainConfig(), question_list(loaded=False), folder=folder)
        except GoBack:
            screen.say(texts["ui"]["first_question"], "dim")
            continue
        start.answers[load_json.path] = True
        while True:
            try:
                path = Path(ask.ask_question(load_path, start, texts, console))
            except GoBack:
                start.taken_back[load_json.path] = start.answers.pop(load_json.path)  # asked again, proposing yes
                break
            loaded = load_saved(screen, path)
            if loaded is not None:
                return Draft(loaded, question_list(loaded=True), loaded_from=path, folder=folder)
            start.answers[load_path.path] = str(path)  # asked again, with the path to correct


def load_saved(screen: Screen, path: Path) -> TrainConfig | None:
    """The config in `path`, in full (a value the short list asks again is proposed, not dropped),
    with the import's notes shown; None after showing why it cannot be loaded."""
    from engine.config.io import read_config

    try:
        loaded = read_config(path)
    except ConfigError as err:
        screen.say(str(err), "red")
        return None
    screen.say(screen.texts["ui"]["loaded"].format(path=path))
    for note in loaded.notes:  # e.g. the LETS keys an import left out, and why
        screen.say(note, "yellow", "  ")
    return loaded.config


def next_question(draft: Draft) -> Question | None:
    """The first question that applies and has no answer yet; the answers of questions that no
    longer apply (a gate switched off, advanced settings turned off) are forgotten on the way."""
    for q in draft.questions:
        if not draft.in_play(q) or not q.when(draft):
            draft.answers.pop(q.path, None)
        elif q.path not in draft.answers:
            return q
    return None


def fill(draft: Draft, screen: Screen, *, may_start_over: bool = False) -> None:
    """Ask, in order, every question that applies and has no answer yet. An advanced group starts
    with its heading; a block list is followed by the per-block values it gives. Back (Esc) asks
    the previous answer again; at the first question of a new config, "load a saved config?"."""
    texts, console = screen.texts, screen.console
    group = None
    while (q := next_question(draft)) is not None:
        draft.asking = q.path
        if q.group and q.group != group:
            screen.blank()
            screen.say(texts["groups"][q.group], "bold")
        group = q.group
        try:
            value = ask.ask_question(q, draft, texts, console)
        except GoBack:
            if draft.take_back() is None:
                if may_start_over and not draft.answers:
                    raise StartOver from None
                screen.say(texts["ui"]["first_question"], "dim")
            group = None
            continue
        draft.answer(q, value)
        draft.asked.append(q.path)
        after_answer(q, draft, screen)
    draft.asking = None


def after_answer(q: Question, draft: Draft, screen: Screen) -> None:
    """What an answer shows: a block list's per-block values, the image folder's dataset."""
    if q.shows_blocks:
        show_blocks(draft, screen)
    if q.path == IMAGE_FOLDER:
        show_dataset(draft, screen)


def show_blocks(draft: Draft, screen: Screen) -> None:
    """The per-block values the block answers give, as a table (nothing while none is set)."""
    values = block_values(draft)
    if values:
        screen.console.print(block_table(block_family(draft), values, screen.texts["blocks"]))


def complete(draft: Draft, screen: Screen, *, may_start_over: bool = False) -> TrainConfig:
    """Fill the draft, then check it with the rulebook, against this machine and the model's
    family, and the dataset folders' layout; a broken rule is shown and the question it names is
    asked again."""
    texts = screen.texts
    while True:
        fill(draft, screen, may_start_over=may_start_over)
        cfg, problems = ask.check_draft(draft.to_data())
        if cfg is not None:
            problems = errors(run_problems(cfg, draft))
            if not problems:
                return cfg
        screen.say(texts["ui"]["problems"], "red")
        for problem in problems:
            screen.say(render(problem), "red", "  - ", "    ")
        q = question_named_in(problems, draft.active()) or pick_question(draft, texts)
        if q is not None:
            draft.asking = q.path
            try:
                draft.answer(q, ask.ask_question(q, draft, texts, screen.console))
            except GoBack:
                continue


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


def review(draft: Draft, cfg: TrainConfig, screen: Screen) -> tuple[str, TrainConfig]:
    """Show the config (and, for a loaded file, what differs from it); return the chosen action
    with the (possibly edited) config."""
    texts, ui = screen.texts, screen.texts["ui"]
    draft.asking = None
    while True:
        loaded = draft.base if draft.loaded_from is not None else None
        follows = follows_text(draft, texts)
        show_review(screen, review_table(cfg, texts["review"], follows, loaded), cfg, follows, loaded)
        if loaded is not None:
            changed = changed_from_file(cfg, loaded)
            key = "changed_from_file" if changed else "same_as_file"
            screen.say(ui[key].format(count=len(changed), path=draft.loaded_from, fields=", ".join(changed)), "yellow")
        for problem in warnings(run_problems(cfg, draft)):
            screen.say(f"{ui['note']} {render(problem)}", "yellow")
        choices = [questionary.Choice(texts["actions"][a], value=a) for a in ACTIONS]
        action = select(ui["action"], choices, ui, back=False).unsafe_ask()
        if action != EDIT:
            return action, cfg
        q = pick_question(draft, texts)
        if q is None:
            continue
        try:
            draft.answer(q, ask.ask_question(q, draft, texts, screen.console))
        except GoBack:
            continue
        after_answer(q, draft, screen)
        cfg = complete(draft, screen)


def follows_text(draft: Draft, texts: dict[str, Any]) -> dict[str, str]:
    """field -> why its value follows an earlier answer ("for Prodigy"), for the review."""
    return {path: texts["follows"][f.reason].format(**f.fields) for path, f in draft.derived.items()}


def leave(
    draft: Draft | None, screen: Screen, folder: Path, saved: list[Path], kept: KeptDraft | None
) -> WizardCancelled:
    """After Ctrl-C: offer to keep the draft (Ctrl-C again leaves without keeping it). A draft that
    was being continued is replaced by the new one."""
    ui = screen.texts["ui"]
    path = None
    if draft is not None and (draft.answers or kept is not None):
        screen.say(ui["interrupted"])
        try:
            keep = confirm(ui["save_draft"], True, ui).unsafe_ask()
        except (KeyboardInterrupt, GoBack):
            keep = False
        if keep:
            path = keep_draft(draft, folder)
            if kept is not None:
                kept.path.unlink(missing_ok=True)
            where = screen.texts["questions"][draft.asking]["message"] if draft.asking else ui["at_review"]
            screen.say(ui["draft_saved"].format(path=path), "green")
            screen.say(ui["draft_next"].format(question=where))
            screen.command_line(screen.command)
    return WizardCancelled(ui["cancelled"], saved, path)


def save_config(cfg: TrainConfig, folder: Path) -> Path:
    """`<output name>-<time>.json` (the dataset's concept name when the LoRA has no name)."""
    from engine.config.io import save_config as save

    return save(cfg, Path(folder), name=config_name(cfg))


def config_name(cfg: TrainConfig) -> str:
    """A name a user recognises in saved_configs/: the output name, else the name of the first
    `<repeats>_<name>` folder of the dataset (what the LoRA is about), else "config"."""
    if cfg.saving.output_name:
        return cfg.saving.output_name
    from engine.config.schema import SAMPLE_DATASET

    folder = Path(str(cfg.dataset.img_folder))
    if str(cfg.dataset.img_folder) == SAMPLE_DATASET:
        return "sample"
    concepts = sorted(p.name for p in folder.iterdir() if p.is_dir() and "_" in p.name) if folder.is_dir() else []
    name = concepts[0].partition("_")[2] if concepts else ""
    return name if name and not set('/\\:*?"<>|') & set(name) else "config"


__all__ = ["WizardCancelled", "WizardOutcome", "run_interactive"]
