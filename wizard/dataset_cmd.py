"""`lora-wizard dataset ...`: see a dataset, tag it, caption it and clean its captions.

    dataset DIR [--config CFG.json] [--resolution N|WxH]   the view (also `dataset view DIR`)
    dataset tag DIR --tagger FOLDER [...]                  WD14 tags into missing caption files
    dataset caption DIR --blip FOLDER [...]                BLIP captions into missing caption files
    dataset clean DIR [--dry-run]                          sd-scripts' clean-up rules
    dataset edit DIR --trigger W | --remove T | --rename A,B [--dry-run]

The engine (engine/prep/) does the work; this module parses the options and prints the results;
the view and the progress bars are wizard/dataset_view.py's. Everything is printed pre-wrapped to
the terminal width (at most 80 columns); a path longer than a line is printed whole on its own
line, never cut.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from engine.errors import ConfigError
from engine.events import Outcome
from wizard.dataset_view import RichItemProgress, render_summary, view_width
from wizard.screen import say, wrap

#: the tagger folder the wizard offers and `dataset tag` uses when --tagger is not given
TAGGER_ENV = "LORA_WIZARD_TAGGER"
COMMANDS = ("view", "tag", "caption", "clean", "edit")


# ---- argument parsing ------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, folder_optional: bool = False) -> None:
    if folder_optional:
        parser.add_argument("folder", type=Path, nargs="?", help="the dataset folder (parent of the <repeats>_<name> folders)")
    else:
        parser.add_argument("folder", type=Path, help="the dataset folder, or one <repeats>_<name> folder; sub-folders are included")
    parser.add_argument("--caption-extension", help="caption files' extension (default .txt, or the config's)")


def _edit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    prog = "lora-wizard dataset"
    view = argparse.ArgumentParser(
        prog=prog,
        description=(
            "See a dataset as training will: images per folder with repeats, missing captions, the top tags, "
            "the buckets and the images that will be enlarged. Other commands: "
            "`dataset tag DIR --tagger FOLDER`, `dataset caption DIR --blip FOLDER`, `dataset clean DIR`, "
            "`dataset edit DIR`; each has --help."
        ),
    )
    _common(view, folder_optional=True)
    view.add_argument("--config", type=Path, help="use this config's dataset settings (and its folders when DIR is not given)")
    view.add_argument("--resolution", help="training resolution: 512, or 768x512 (default: the config's, else 512)")
    view.add_argument("--top", type=int, default=20, help="how many of the most frequent tags to list (default 20)")

    tag = argparse.ArgumentParser(
        prog=f"{prog} tag",
        description=(
            "Write WD14 tagger tags into a caption file for each image that has none (all with --overwrite, "
            "the old files backed up). Offline: the tagger is a folder you downloaded (model.onnx + selected_tags.csv)."
        ),
    )
    _common(tag)
    tag.add_argument("--tagger", type=Path, help=f"the tagger folder (default: ${TAGGER_ENV})")
    tag.add_argument("--general-threshold", type=float, default=0.35, help="keep a general tag from this probability (default 0.35)")
    tag.add_argument("--character-threshold", type=float, default=0.35, help="keep a character tag from this probability (default 0.35; above 1: none)")
    tag.add_argument("--undesired", help="tags never to write, comma-separated")
    tag.add_argument("--replace", help="tag replacements: 'source,target;source2,target2' (\\, for a comma in a tag)")
    tag.add_argument("--keep-underscores", action="store_true", help="keep the tagger's underscores (default: spaces)")
    tag.add_argument("--always-first", help="tags put first when present, comma-separated, in this order")
    tag.add_argument("--trigger", help="a trigger word written as the first tag of every file")
    tag.add_argument("--overwrite", action="store_true", help="tag images that already have a caption too (originals backed up)")
    tag.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")

    caption = argparse.ArgumentParser(
        prog=f"{prog} caption",
        description=(
            "Write a BLIP caption into a caption file for each image that has none (all with --overwrite, the old "
            "files backed up). Offline: the model is a folder you downloaded (e.g. Salesforce/blip-image-captioning-large)."
        ),
    )
    _common(caption)
    caption.add_argument("--blip", type=Path, required=True, help="the BLIP model folder")
    caption.add_argument("--beam-search", action="store_true", help="beam search instead of nucleus sampling")
    caption.add_argument("--num-beams", type=int, default=1, help="beams with --beam-search (default 1)")
    caption.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling's top_p (default 0.9)")
    caption.add_argument("--max-length", type=int, default=75, help="longest caption in tokens (default 75)")
    caption.add_argument("--min-length", type=int, default=5, help="shortest caption in tokens (default 5)")
    caption.add_argument("--seed", type=int, default=42, help="random seed of the sampling (default 42)")
    caption.add_argument("--prompt", default="a picture of ", help="text the caption starts from, cut from the result (default 'a picture of ')")
    caption.add_argument("--prefix", default="", help="text put before every caption, e.g. 'mychar, '")
    caption.add_argument("--suffix", default="", help="text put after every caption")
    caption.add_argument("--overwrite", action="store_true", help="caption images that already have a caption too (originals backed up)")
    caption.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")

    clean = argparse.ArgumentParser(
        prog=f"{prog} clean",
        description=(
            "Clean caption files with the rules of sd-scripts' clean_captions_and_tags: tag lists lose duplicates, "
            "empty tags, underscores and ambiguous per-person tags; sentences get its word fixes (written for anime "
            "images: 'woman' becomes 'girl'). Originals are backed up in DIR/.caption-backup-<time>/."
        ),
    )
    _common(clean)
    clean.add_argument("--as", dest="kind", choices=["auto", "tags", "caption"], default="auto",
                       help="rules to use: auto (a line with a comma is tags), tags or caption")
    _edit_options(clean)

    edit = argparse.ArgumentParser(
        prog=f"{prog} edit",
        description="Edit tags in every caption file. Originals are backed up in DIR/.caption-backup-<time>/.",
    )
    _common(edit)
    edit.add_argument("--trigger", help="put this word first in every caption (added, or moved)")
    edit.add_argument("--remove", help="tags to remove, comma-separated")
    edit.add_argument("--rename", help="tags to rename: 'old,new;old2,new2' (\\, for a comma in a tag)")
    _edit_options(edit)
    return {"view": view, "tag": tag, "caption": caption, "clean": clean, "edit": edit}


def parse(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """(command, options); a first word that is not a command is the view's folder."""
    command = argv[0] if argv and argv[0] in COMMANDS else "view"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    return command, build_parsers()[command].parse_args(rest)


def run_dataset(console: Console, argv: list[str], texts: dict | None = None, program: str = "lora-wizard") -> int:
    """`texts`: prompts/<lang>.toml of the user's language (English if None); `program`: the
    command the user typed, for the hints."""
    from prompts import load_prompts

    texts = texts or load_prompts("en")
    command, args = parse(argv)
    if command == "view":
        return _view(console, args, texts, program)
    return {"tag": _tag, "caption": _caption, "clean": _clean, "edit": _edit}[command](console, args, texts["dataset_tools"])


# ---- output helpers ---------------------------------------------------------------------------------


def _folder(value: Path) -> Path:
    return Path(value).expanduser()


def _extension(value: str | None, default: str = ".txt") -> str:
    ext = value or default
    if not ext.startswith(".") or len(ext) < 2 or "/" in ext or "\\" in ext:
        raise ConfigError(f"--caption-extension {ext!r}: write it with its dot, like .txt or .caption")
    return ext


# ---- the view ------------------------------------------------------------------------------------------


def view_config(folder: Path | None, config: Path | None, resolution: str | None, extension: str | None):
    """The TrainConfig the view plans with: the config file's (or the defaults), with DIR, the
    resolution and the caption extension given on the command line."""
    from engine.config.io import config_from_dict, load_config
    from engine.config.schema import CONFIG_VERSION, TrainConfig
    from wizard.checks import parse_resolution

    if folder is None and config is None:
        raise ConfigError("dataset: give the dataset folder (dataset DIR), or --config CFG.json")
    cfg = load_config(config) if config else TrainConfig()
    data = cfg.model_dump(mode="json")
    data["version"] = CONFIG_VERSION
    if folder is not None:
        data["dataset"]["img_folder"] = str(_folder(folder))
    if resolution is not None:
        value = parse_resolution(resolution)  # "768x512" -> ("768", "512"); the model converts the numbers
        data["dataset"]["resolution"] = list(value) if isinstance(value, tuple) else value
    if extension is not None:
        data["dataset"]["caption_extension"] = extension
    return config_from_dict(data, source=str(config) if config else "dataset options")


def _view(console: Console, args, texts: dict, program: str) -> int:
    from engine.prep.view import summarize

    _positive("--top", args.top)
    cfg = view_config(args.folder, args.config, args.resolution, args.caption_extension)
    if args.folder is not None:
        _refuse_concept_folder(_folder(args.folder), program)
    say(console, render_summary(summarize(cfg, top=args.top), view_width(console), texts["dataset_view"]))
    return Outcome.OK


def _refuse_concept_folder(folder: Path, program: str) -> None:
    """`dataset 10_mychar` (one concept folder instead of its parent) gets the fix, not a riddle."""
    from engine.data.layout import IMAGE_EXTENSIONS, SUBSET_NAME

    if folder.is_dir() and SUBSET_NAME.match(folder.name) and not any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()):
            from engine.errors import DatasetError

            raise DatasetError(
                f"{folder} is a concept folder (<repeats>_<name>); training and this view take its parent: "
                f"{program} dataset {folder.parent}"
            )


# ---- tag and caption -----------------------------------------------------------------------------------


def _tag(console: Console, args, t: dict) -> int:
    from engine.prep.tagger import TaggerOptions, WD14Tagger
    from engine.prep.tags import parse_replacements, parse_tag_option

    folder = args.tagger or (Path(os.environ[TAGGER_ENV]) if os.environ.get(TAGGER_ENV) else None)
    if folder is None:
        raise ConfigError(
            f"dataset tag: no tagger; give --tagger FOLDER (the folder holding model.onnx and selected_tags.csv) "
            f"or set {TAGGER_ENV}"
        )
    for name in ("general_threshold", "character_threshold"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: a probability threshold is 0 or more")
    _positive("--batch-size", args.batch_size)
    options = TaggerOptions(
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        undesired=tuple(parse_tag_option(args.undesired)),
        replacements=parse_replacements(args.replace),
        underscores_to_spaces=not args.keep_underscores,
        always_first=tuple(parse_tag_option(args.always_first)),
        trigger=args.trigger,
        batch_size=args.batch_size,
    )
    return label_folder(console, _folder(args.folder), _extension(args.caption_extension), args.overwrite,
                        lambda: WD14Tagger(_folder(folder), options), t, t["tagging"])


def _caption(console: Console, args, t: dict) -> int:
    from engine.prep.blip import BlipCaptioner, BlipOptions

    for name in ("batch_size", "num_beams", "max_length"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p {args.top_p}: must be above 0 and at most 1")
    if not 0 <= args.min_length <= args.max_length:
        raise ConfigError(f"--min-length {args.min_length}: must be between 0 and --max-length ({args.max_length})")
    options = BlipOptions(
        beam_search=args.beam_search, num_beams=args.num_beams, top_p=args.top_p, max_length=args.max_length,
        min_length=args.min_length, seed=args.seed, prompt=args.prompt, prefix=args.prefix, suffix=args.suffix,
        batch_size=args.batch_size,
    )
    return label_folder(console, _folder(args.folder), _extension(args.caption_extension), args.overwrite,
                        lambda: BlipCaptioner(_folder(args.blip), options), t, t["captioning"])


def _positive(option: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{option} {value}: must be 1 or more")


def label_folder(console: Console, folder: Path, extension: str, overwrite: bool, load, t: dict, title: str) -> int:
    """Run a labelling job (tagger or BLIP) with a progress bar; the counts afterwards. `t`:
    prompts' [dataset_tools]."""
    from engine.prep.label import LabelJob

    job = LabelJob.for_folder(folder, extension, overwrite=overwrite)
    width = view_width(console)
    had = t["had"].format(count=len(job.result.skipped), extension=extension) if job.result.skipped else ""
    say(console, wrap(t["images_todo"].format(images=len(job.images), folder=folder, todo=len(job.todo), had=had), width))
    if not job.todo:
        return Outcome.OK
    labeler = load()  # a wrong model folder stops here, before any file is written
    progress = RichItemProgress(console, title)
    try:
        job.run(labeler, progress)
    except KeyboardInterrupt:
        progress.close()
        say(console, wrap(t["labels_stopped"].format(count=job.result.done), width), "yellow")
        _say_backup(console, job.backup, width, t)
        return Outcome.CANCELLED
    progress.close()
    return report_labels(console, job, width, t)


def report_labels(console: Console, job, width: int, t: dict) -> int:
    r = job.result
    lines = wrap(t["wrote"].format(count=len(r.written), extension=job.extension), width)
    if r.replaced:
        lines += wrap(t["replaced"].format(count=len(r.replaced)), width)
    say(console, lines, "green")
    _say_backup(console, job.backup, width, t)
    if r.failed:
        say(console, wrap(t["unreadable"].format(count=len(r.failed)), width), "red")
        for path, why in r.failed:
            say(console, wrap(f"{path}: {why}", width, "  ", "    "), "red")
        return Outcome.BAD_INPUT
    return Outcome.OK


def _say_backup(console: Console, backup, width: int, t: dict) -> None:
    if backup.folder is not None:
        say(console, wrap(t["backup"].format(count=len(backup.kept), folder=backup.folder), width))


# ---- clean and edit ------------------------------------------------------------------------------------


def _clean(console: Console, args, t: dict) -> int:
    from engine.prep.clean import CleanAs
    from engine.prep.edit import clean_rule

    return edit_folder(console, _folder(args.folder), _extension(args.caption_extension), clean_rule(CleanAs(args.kind)), args.dry_run, t)


def _edit(console: Console, args, t: dict) -> int:
    from engine.prep.edit import tag_edit_rule
    from engine.prep.tags import parse_replacements, parse_tag_option

    if not (args.trigger or args.remove or args.rename):
        raise ConfigError("dataset edit: say what to change: --trigger WORD, --remove TAGS and/or --rename OLD,NEW")
    rule = tag_edit_rule(trigger=args.trigger, remove=parse_tag_option(args.remove), rename=parse_replacements(args.rename))
    return edit_folder(console, _folder(args.folder), _extension(args.caption_extension), rule, args.dry_run, t)


def edit_folder(console: Console, folder: Path, extension: str, rule, dry_run: bool, t: dict) -> int:
    from engine.prep.backup import CaptionBackup
    from engine.prep.edit import EditResult, apply_changes, plan_changes

    width = view_width(console)
    changes = plan_changes(folder, extension, rule)
    if not changes:
        say(console, wrap(t["nothing"].format(extension=extension, folder=folder), width))
        return Outcome.OK
    if dry_run:
        show_changes(console, changes, folder, width, t)
        say(console, wrap(t["would_change"].format(count=len(changes)), width))
        return Outcome.OK
    backup = CaptionBackup(folder)
    result = EditResult()
    progress = RichItemProgress(console, t["editing"])
    try:
        apply_changes(changes, backup, progress, result)
    except KeyboardInterrupt:
        progress.close()
        say(console, wrap(t["edit_stopped"].format(done=len(result.changed), count=len(changes)), width), "yellow")
        _say_backup(console, backup, width, t)
        return Outcome.CANCELLED
    progress.close()
    say(console, wrap(t["changed"].format(count=len(result.changed)), width), "green")
    _say_backup(console, backup, width, t)
    return Outcome.OK


def show_changes(console: Console, changes, folder: Path, width: int, t: dict) -> None:
    from engine.prep.folder import shown

    for change in changes:
        say(console, wrap(shown(change.path, folder), width))
        say(console, wrap(change.old or t["empty"], width, "  - ", "    "), "red")
        say(console, wrap(change.new or t["empty"], width, "  + ", "    "), "green")
