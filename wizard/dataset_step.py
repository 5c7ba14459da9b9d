"""The wizard's dataset step: after the image folder question, the dataset as training will see
it, and an offer to tag the images that have no caption.

The summary is `lora-wizard dataset DIR`'s (wizard/dataset_cmd.py), computed with the settings of
the config being edited (its resolution and buckets; later answers can still change them). The
offer appears when a tagger is configured, with the environment variable LORA_WIZARD_TAGGER naming
the tagger folder (set once in the shell, like LORA_WIZARD_HOME), and some training image has no
caption file. A problem with the folder or the tagger is shown and the wizard goes on: the
preflight before training reports the dataset's problems again.
"""

from __future__ import annotations

import os
from pathlib import Path

import questionary

from engine.config.schema import SAMPLE_DATASET, TrainConfig
from engine.errors import LoraWizardError
from wizard.dataset_cmd import TAGGER_ENV, report_labels
from wizard.dataset_view import RichItemProgress, render_summary, view_width
from wizard.prompt_kit import confirm
from wizard.screen import Screen, say

IMAGE_FOLDER = "dataset.img_folder"


def summary_config(draft) -> TrainConfig:
    """The config with the answers so far (the folder just answered, the resolution when it has been
    answered, e.g. when the folder is edited from the review); when those answers do not make a
    valid config yet, the config being edited with the new folder."""
    folder = draft.value(IMAGE_FOLDER)
    try:
        data = draft.to_data()
        data["dataset"]["img_folder"] = folder
        return TrainConfig.model_validate(data)
    except ValueError:  # pydantic's ValidationError: answers that only the end of the wizard checks
        data = draft.base.model_dump()
        data["dataset"]["img_folder"] = folder
        return TrainConfig.model_validate(data)


def show_dataset(draft, screen: Screen) -> None:
    from engine.prep.view import summarize

    wording, console = screen.texts["dataset"], screen.console
    try:
        cfg = summary_config(draft)
        summary = summarize(cfg)
    except (LoraWizardError, ValueError) as err:  # ValueError: pydantic's, for a value the config refuses
        screen.say(wording["problem"].format(error=err), "yellow")
        return
    say(console, render_summary(summary, view_width(console), screen.texts["dataset_view"]))
    tagger = os.environ.get(TAGGER_ENV)
    if tagger and summary.missing_captions and draft.value(IMAGE_FOLDER) != SAMPLE_DATASET:
        offer_tagging(cfg, summary, Path(tagger).expanduser(), screen)


def offer_tagging(cfg: TrainConfig, summary, tagger: Path, screen: Screen) -> None:
    """Ask, then write tags for the training images without a caption file; show the summary again."""
    from engine.prep.label import LabelJob
    from engine.prep.tagger import TaggerOptions, WD14Tagger
    from engine.prep.view import summarize

    wording, console = screen.texts["dataset"], screen.console
    screen.say(wording["offer_tag_help"], "dim", "  ")
    question = wording["offer_tag"].format(count=summary.missing_captions, folder=tagger)
    if not confirm(question, True, screen.texts["ui"]).unsafe_ask():
        return
    trigger = questionary.text(wording["trigger"], default="").unsafe_ask().strip()
    try:
        job = LabelJob.for_folder(summary.root, cfg.dataset.caption_extension)
        tagger_model = WD14Tagger(tagger, TaggerOptions(trigger=trigger or None))
    except LoraWizardError as err:
        screen.say(wording["tag_failed"].format(error=err), "red")
        return
    progress = RichItemProgress(console, screen.texts["dataset_tools"]["tagging"])
    try:
        job.run(tagger_model, progress)
    finally:
        progress.close()
    report_labels(console, job, view_width(console), screen.texts["dataset_tools"])
    say(console, render_summary(summarize(cfg), view_width(console), screen.texts["dataset_view"]))
