"""The wizard's questions, as data.

The order is the one users of LoRA_Easy_Training_Scripts know (LETS_FLOW.md, B1 at d14b240), with the
B2 questions that fit our engine (network type and LoCon conv rank, mixed precision, latent caching,
min-SNR gamma) and without the LETS bugs: AdamW really selects AdamW, the training comment is kept,
"don't save every epoch" leaves the option unset instead of passing 999999, warmup is asked only for
schedulers that have one. The wording of every question lives in prompts/<lang>.toml under the
question's `path`; this module holds no user-facing text.

A question either fills one config field (`path` is "section.field") or is a wizard-only yes/no gate
(`path` starts with "ask.") that other questions depend on through a named `when` predicate. A field
whose question is in the list but whose `when` is false is reset to its default, so switching a gate
off also clears what it used to enable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.config import (
    NOT_SUPPORTED_VALUES,
    NOT_SUPPORTED_YET,
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    Optimizer,
    TagFile,
    TrainConfig,
    TrainOn,
    section_model,
)
from wizard.checks import (
    check_base_model,
    check_dataset,
    check_dir,
    check_file,
    check_json_file,
    check_output_folder,
    clean_path,
    parse_resolution,
)

#: paths of wizard-only answers (not config fields) start with this
ASK = "ask."


class Kind(StrEnum):
    CONFIRM = "confirm"
    SELECT = "select"
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    FILE = "file"
    DIR = "dir"


@dataclass
class Draft:
    """The answers so far on top of the config being edited (defaults for a new one, a loaded file's
    values otherwise)."""

    base: TrainConfig
    questions: tuple[Question, ...]
    answers: dict[str, Any] = field(default_factory=dict)

    def value(self, path: str) -> Any:
        """The current value: the answer if given, else the base config's value (or, for a gate,
        what its question would propose)."""
        if path in self.answers:
            return self.answers[path]
        if path.startswith(ASK):
            return QUESTIONS_BY_PATH[path].proposal(self)
        return field_value(self.base, path)

    def active(self) -> list[Question]:
        return [q for q in self.questions if q.when(self)]

    def to_data(self) -> dict[str, Any]:
        """The draft as TrainConfig input (python values, not yet validated together)."""
        data = self.base.model_dump()
        for q in self.questions:
            if q.path.startswith(ASK):
                continue
            section, name = q.path.split(".")
            if not q.when(self):
                data[section][name] = field_default(q.path)
            elif q.path in self.answers:
                data[section][name] = self.answers[q.path]
        return data


Predicate = Callable[[Draft], bool]


def always(draft: Draft) -> bool:
    return True


@dataclass(frozen=True)
class Question:
    path: str
    kind: Kind
    when: Predicate = always
    #: also asked after loading a saved config (LETS B1-J); everything else comes from the file
    short: bool = False
    #: asked only once the user opts into advanced settings (a later issue adds that question)
    advanced: bool = False
    #: SELECT: the allowed values, in the order shown
    choices: tuple[Any, ...] = ()
    #: the value proposed when the question has no answer yet; None: the config's current value
    propose: Callable[[Draft], Any] | None = None
    #: an empty answer means "unset" (None)
    optional: bool = False
    #: CONFIRM questions that stand for a field value: yes gives `yes`, no gives `no(draft)`
    yes: Any = None
    no: Callable[[Draft], Any] | None = None
    #: turns the typed text into what the config field takes (before the model validates it)
    parse: Callable[[str], Any] | None = None
    #: checks the model cannot make (a path exists, a checkpoint is readable); raises AnswerError
    check: Callable[[Any], None] | None = None
    #: values for the `detail` line of the question's text (e.g. the detected model family)
    detail: Callable[[Draft], dict[str, str] | None] | None = None

    def proposal(self, draft: Draft) -> Any:
        return self.propose(draft) if self.propose else draft.value(self.path)


# ---- config field helpers ---------------------------------------------------------------------


def field_value(cfg: TrainConfig, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(cfg, section), name)


def field_default(path: str) -> Any:
    section, name = path.split(".")
    return section_model(section).model_fields[name].get_default(call_default_factory=True)


def is_set_in_base(path: str) -> Callable[[Draft], bool]:
    """Proposal for a gate: yes when the config being edited already sets the field it enables."""
    return lambda draft: field_value(draft.base, path) != field_default(path)


def fixed(value: Any) -> Callable[[Draft], Any]:
    return lambda draft: value


def half_of(path: str) -> Callable[[Draft], Any]:
    return lambda draft: draft.value(path) / 2


def same_as(path: str) -> Callable[[Draft], Any]:
    return lambda draft: draft.value(path)


def base_or(path: str, suggestion: Any) -> Callable[[Draft], Any]:
    """Proposal for a field behind a gate: its value in the config being edited when set, else a
    useful starting value (the field's default is the "off" value the gate stands for)."""

    def propose(draft: Draft) -> Any:
        value = field_value(draft.base, path)
        return suggestion if value == field_default(path) else value

    return propose


# ---- named predicates ----------------------------------------------------------------------------


def wants(gate: str) -> Predicate:
    return lambda draft: bool(draft.value(ASK + gate))


def is_sd2(draft: Draft) -> bool:
    return draft.value("model.family") == ModelFamily.SD2


def is_locon(draft: Draft) -> bool:
    return draft.value("network.type") == NetworkType.LOCON


def uses_restarts(draft: Draft) -> bool:
    return draft.value("optim.lr_scheduler") == LrScheduler.COSINE_WITH_RESTARTS


def is_polynomial(draft: Draft) -> bool:
    return draft.value("optim.lr_scheduler") == LrScheduler.POLYNOMIAL


def scheduler_has_warmup(draft: Draft) -> bool:
    # constant ignores warmup steps (the config refuses the pair), so the question is not offered
    return draft.value("optim.lr_scheduler") != LrScheduler.CONSTANT


def wants_warmup(draft: Draft) -> bool:
    return scheduler_has_warmup(draft) and wants("warmup")(draft)


# ---- model family ---------------------------------------------------------------------------------


def detected_family(draft: Draft) -> ModelFamily | None:
    """The family read from the base model's header or model_index.json (None for builtin:demo)."""
    path = Path(str(draft.value("model.base_model")))
    if not path.exists():
        return None
    from engine.errors import ModelError
    from engine.models.detect import detect_family

    try:
        return detect_family(path)
    except ModelError:
        return None  # the base-model question has already refused this path


def likely_family(draft: Draft) -> ModelFamily:
    return detected_family(draft) or draft.base.model.family


def family_if_not_sd2(draft: Draft) -> ModelFamily:
    """"Not SD2": what the header says, else what the edited config says, else SD1."""
    for family in (detected_family(draft), draft.base.model.family):
        if family is not None and family != ModelFamily.SD2:
            return family
    return ModelFamily.SD1


def family_detail(draft: Draft) -> dict[str, str] | None:
    family = detected_family(draft)
    return {"family": family.value} if family else None


def clip_skip_if_not_realistic(draft: Draft) -> int:
    # keep a loaded config's own clip_skip (say 3); "realistic" only ever means 1
    current = draft.base.model.clip_skip
    return current if current != 1 else 2


# ---- the questions --------------------------------------------------------------------------------

#: asked before everything else; a "yes" loads a saved config and switches to the short list
LOAD_QUESTIONS: tuple[Question, ...] = (
    Question(f"{ASK}load_json", Kind.CONFIRM, propose=fixed(False)),
    Question(f"{ASK}load_path", Kind.FILE, propose=fixed(""), parse=clean_path, check=check_json_file),
)

CAPTION_DROPOUT = (
    "dataset.caption_dropout_rate",
    "dataset.caption_dropout_every_n_epochs",
    "dataset.caption_tag_dropout_rate",
)


def any_caption_dropout_in_base(draft: Draft) -> bool:
    return any(is_set_in_base(path)(draft) for path in CAPTION_DROPOUT)


Q = Question
QUESTIONS: tuple[Question, ...] = (
    Q("model.base_model", Kind.FILE, short=True, parse=clean_path, check=check_base_model),
    Q("dataset.img_folder", Kind.DIR, short=True, parse=clean_path, check=check_dataset),
    Q("saving.output_folder", Kind.DIR, short=True, parse=clean_path, check=check_output_folder),
    Q("model.lowram", Kind.CONFIRM, short=True),
    Q("optim.optimizer", Kind.SELECT, short=True, choices=tuple(Optimizer)),
    Q("model.family", Kind.CONFIRM, short=True, yes=ModelFamily.SD2, no=family_if_not_sd2,
      propose=likely_family, detail=family_detail),
    Q("model.clip_skip", Kind.CONFIRM, short=True, yes=1, no=clip_skip_if_not_realistic),
    Q("model.v_parameterization", Kind.CONFIRM, short=True, when=is_sd2),
    Q(f"{ASK}reg_images", Kind.CONFIRM, short=True, propose=is_set_in_base("dataset.reg_img_folder")),
    Q("dataset.reg_img_folder", Kind.DIR, short=True, when=wants("reg_images"), parse=clean_path,
      check=check_dir),
    Q(f"{ASK}resume_lora", Kind.CONFIRM, short=True, propose=is_set_in_base("network.network_weights")),
    Q("network.network_weights", Kind.FILE, short=True, when=wants("resume_lora"), parse=clean_path,
      check=check_file),
    Q("dataset.flip_aug", Kind.CONFIRM, short=True),
    Q("training.batch_size", Kind.INT),
    Q("training.epochs", Kind.INT),
    Q("network.dim", Kind.INT),
    Q("network.alpha", Kind.FLOAT, propose=half_of("network.dim")),
    Q("network.type", Kind.SELECT, choices=(NetworkType.LORA, NetworkType.LOCON)),
    Q("network.conv_dim", Kind.INT, when=is_locon, propose=base_or("network.conv_dim", 32)),
    Q("network.conv_alpha", Kind.FLOAT, when=is_locon, propose=same_as("network.conv_dim")),
    Q("dataset.resolution", Kind.TEXT, parse=parse_resolution),
    Q("optim.learning_rate", Kind.FLOAT),
    Q("optim.text_encoder_lr", Kind.FLOAT, optional=True),
    Q("optim.unet_lr", Kind.FLOAT, optional=True),
    Q("optim.lr_scheduler", Kind.SELECT, choices=tuple(LrScheduler)),
    Q("optim.lr_scheduler_num_cycles", Kind.INT, when=uses_restarts),
    Q("optim.lr_scheduler_power", Kind.FLOAT, when=is_polynomial),
    Q(f"{ASK}save_every", Kind.CONFIRM, propose=is_set_in_base("saving.save_every_n_epochs")),
    Q("saving.save_every_n_epochs", Kind.INT, when=wants("save_every"),
      propose=base_or("saving.save_every_n_epochs", 1)),
    Q("dataset.shuffle_caption", Kind.CONFIRM),
    Q(f"{ASK}keep_tokens", Kind.CONFIRM, propose=is_set_in_base("dataset.keep_tokens")),
    Q("dataset.keep_tokens", Kind.INT, when=wants("keep_tokens"), propose=base_or("dataset.keep_tokens", 1)),
    Q(f"{ASK}warmup", Kind.CONFIRM, when=scheduler_has_warmup, propose=is_set_in_base("optim.lr_warmup_ratio")),
    Q("optim.lr_warmup_ratio", Kind.FLOAT, when=wants_warmup, propose=base_or("optim.lr_warmup_ratio", 0.05)),
    Q(f"{ASK}output_name", Kind.CONFIRM, short=True, propose=is_set_in_base("saving.output_name")),
    Q("saving.output_name", Kind.TEXT, short=True, when=wants("output_name"),
      propose=base_or("saving.output_name", "")),
    Q("saving.training_comment", Kind.TEXT, short=True, optional=True),
    Q("network.train_on", Kind.SELECT, short=True, choices=tuple(TrainOn)),
    Q("saving.tag_file", Kind.SELECT, short=True, choices=tuple(TagFile)),
    Q(f"{ASK}caption_dropout", Kind.CONFIRM, short=True, propose=any_caption_dropout_in_base),
    Q("dataset.caption_dropout_rate", Kind.FLOAT, short=True, when=wants("caption_dropout"),
      propose=base_or("dataset.caption_dropout_rate", 0.05)),
    Q("dataset.caption_dropout_every_n_epochs", Kind.INT, short=True, when=wants("caption_dropout")),
    Q("dataset.caption_tag_dropout_rate", Kind.FLOAT, short=True, when=wants("caption_dropout")),
    Q(f"{ASK}noise_offset", Kind.CONFIRM, short=True, propose=is_set_in_base("training.noise_offset")),
    Q("training.noise_offset", Kind.FLOAT, short=True, when=wants("noise_offset"),
      propose=base_or("training.noise_offset", 0.1)),
    Q("dataset.bucket_no_upscale", Kind.CONFIRM),
    Q("optim.mixed_precision", Kind.SELECT, choices=tuple(MixedPrecision)),
    Q("dataset.cache_latents", Kind.CONFIRM),
    Q(f"{ASK}min_snr", Kind.CONFIRM, propose=is_set_in_base("training.min_snr_gamma")),
    Q("training.min_snr_gamma", Kind.FLOAT, when=wants("min_snr"), propose=base_or("training.min_snr_gamma", 5.0)),
)

QUESTIONS_BY_PATH: dict[str, Question] = {q.path: q for q in (*LOAD_QUESTIONS, *QUESTIONS)}


def question_list(*, loaded: bool, advanced: bool = False) -> tuple[Question, ...]:
    """The questions for a new config, or the short list after loading one (LETS B1-J).

    Options the engine does not support yet (engine.config.NOT_SUPPORTED_YET) are not offered; their
    questions come back by themselves when the feature lands."""
    return tuple(
        q
        for q in QUESTIONS
        if (q.short or not loaded) and (advanced or not q.advanced) and q.path not in NOT_SUPPORTED_YET
    )


def offered_choices(q: Question) -> tuple[Any, ...]:
    """A select question's values, less those the engine does not support yet."""
    unsupported = NOT_SUPPORTED_VALUES.get(q.path, ())
    return tuple(value for value in q.choices if value not in unsupported)
