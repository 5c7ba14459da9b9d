"""The review's "sweep a setting": one field and its values make one run per value from the
current answers (engine/queue/sweep.py expands and validates them), which then train now, join the
queue, or are saved, as the review's own actions do."""

from __future__ import annotations

import questionary

from engine.config.schema import TrainConfig, field_paths
from engine.errors import ConfigError
from wizard.prompt_kit import fit_message, ready, select
from wizard.screen import Screen

ACTIONS = ("train", "queue", "save")  # what the review offers for one config, less "edit"


def sweep_from(cfg: TrainConfig, screen: Screen) -> tuple[str, list[TrainConfig]]:
    """Ask a field and its values until they make a valid grid; return the chosen action and the
    grid's configs, in order (each named `<output_name>-<field>=<value>`)."""
    from engine.queue.sweep import expand, parse_sweeps

    texts = screen.texts
    ui = texts["sweep"]
    while True:
        path = ask_field(ui)
        values = ask_values(ui, path)
        try:
            points = expand(cfg, [], parse_sweeps([f"{path}={values}"]), base_name=cfg.saving.output_name or "sweep")
        except ConfigError as err:
            screen.say(str(err), "red")
            continue
        screen.say(ui["runs"].format(count=len(points)))
        for point in points:
            screen.say(point.name, indent="  ")
        return ask_action(ui, texts["actions"], texts["ui"]), [p.config for p in points]


def ask_field(ui: dict[str, str]) -> str:
    return ready(questionary.text(fit_message(ui["field"]), validate=field_check(ui))).unsafe_ask().strip()


def field_check(ui: dict[str, str]):
    """The answer's check: a config field's dotted name (spaces around it allowed)."""
    known = set(field_paths())

    def validate(typed: str) -> bool | str:
        return typed.strip() in known or ui["unknown_field"]

    return validate


def ask_values(ui: dict[str, str], path: str) -> str:
    def validate(typed: str) -> bool | str:
        return bool(typed.strip()) or ui["no_values"]

    return ready(questionary.text(fit_message(ui["values"].format(field=path)), validate=validate)).unsafe_ask().strip()


def ask_action(ui: dict[str, str], actions: dict[str, str], common: dict[str, str]) -> str:
    choices = [questionary.Choice(actions[a], value=a) for a in ACTIONS]
    return select(ui["action"], choices, common, back=False).unsafe_ask()
