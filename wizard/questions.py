"""The wizard's questions, as data.

The order is the one users of LoRA_Easy_Training_Scripts know (its first wizard, commit d14b240), with the
B2 questions that fit our engine (network type and LoCon conv rank, mixed precision, latent caching,
min-SNR gamma) and without the LETS bugs: AdamW really selects AdamW, the training comment is kept,
"don't save every epoch" leaves the option unset instead of passing 999999, warmup is asked only for
schedulers that have one. The wording of every question lives in prompts/<lang>.toml under the
question's `path`; this module holds no user-facing text.

A question either fills one config field (`path` is "section.field") or is a wizard-only yes/no gate
(`path` starts with "ask.") that other questions depend on through a named `when` predicate. A field
whose question is in the list but whose `when` is false is reset to its default, so switching a gate
off also clears what it used to enable.

After the LETS questions, "advanced settings?" (default no) opens the `advanced` questions, in
groups (blocks, dropouts, timesteps and loss, saving, performance). While it is no, those questions
are out of play: not asked and not reset, so a loaded config keeps its advanced values as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.config.defaults import (
    bucket_bounds,
    suggested_learning_rate,
    suggested_precision,
    suggested_resolution,
)
from engine.config.schema import (
    Attention,
    HuberSchedule,
    LossType,
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    NoiseOffsetType,
    Optimizer,
    SaveFormat,
    SavePrecision,
    TagFile,
    TrainConfig,
    TrainOn,
    section_model,
)
from engine.errors import ConfigError
from engine.network.blocks import is_number
from engine.problems import render
from wizard.checks import (
    AnswerError,
    check_base_model,
    check_dataset,
    check_file,
    check_json_file,
    check_output_folder,
    check_reg_folder,
    clean_path,
    parse_resolution,
)

#: paths of wizard-only answers (not config fields) start with this
ASK = "ask."
#: the gate of the advanced questions
ADVANCED = "ask.advanced"


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
    #: answers (and unasked fields) whose value follows an earlier answer, and why: the review marks them
    derived: dict[str, Followed] = field(default_factory=dict)

    def value(self, path: str) -> Any:
        """The current value: the answer if given, else the base config's value (or, for a gate,
        what its question would propose)."""
        if path in self.answers:
            return self.answers[path]
        if path.startswith(ASK):
            return QUESTIONS_BY_PATH[path].proposal(self)
        return field_value(self.base, path)

    def answer(self, q: Question, value: Any) -> None:
        """Record an answer; then answers that took a value following earlier answers follow again
        (an optimizer changed at the review brings its learning rate along)."""
        self.answers[q.path] = value
        followed = q.follows(self) if q.follows else None
        if followed is not None and followed.value == value:
            self.derived[q.path] = followed
        else:
            self.derived.pop(q.path, None)
        for other in self.questions:
            if other is not q and other.path in self.derived and other.path in self.answers and other.follows:
                again = other.follows(self)
                if again is not None:
                    self.answers[other.path], self.derived[other.path] = again.value, again

    def in_play(self, q: Question) -> bool:
        """Advanced questions count only once the user said yes to "advanced settings?"."""
        return not q.advanced or bool(self.value(ADVANCED))

    def active(self) -> list[Question]:
        return [q for q in self.questions if self.in_play(q) and q.when(self)]

    def to_data(self) -> dict[str, Any]:
        """The draft as TrainConfig input (python values, not yet validated together)."""
        data = self.base.model_dump()
        for q in self.questions:
            if q.path.startswith(ASK) or not self.in_play(q):
                continue
            section, name = q.path.split(".")
            if not q.when(self):
                data[section][name] = field_default(q.path)
            elif q.path in self.answers:
                data[section][name] = self.answers[q.path]
        for path, follows in HIDDEN_FOLLOWERS:
            section, name = path.split(".")
            followed = follows(self, data) if field_value(self.base, path) == field_default(path) else None
            if followed is None:
                self.derived.pop(path, None)
            else:
                data[section][name] = followed.value
                self.derived[path] = followed
        return data


Predicate = Callable[[Draft], bool]


@dataclass(frozen=True)
class Followed:
    """A value that follows earlier answers, with why: `reason` names a line of prompts' [follows]
    table, formatted with `fields` ("for Prodigy")."""

    value: Any
    reason: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Correction:
    """A typed answer that is almost surely meant as another value: the wizard offers it."""

    value: Any
    reason: str  # names a line of prompts' [errors] table, formatted with `fields`
    fields: dict[str, str] = field(default_factory=dict)


def always(draft: Draft) -> bool:
    return True


@dataclass(frozen=True)
class Question:
    path: str
    kind: Kind
    when: Predicate = always
    #: also asked after loading a saved config (LETS B1-J); everything else comes from the file
    short: bool = False
    #: asked only once the user opts into advanced settings ("ask.advanced")
    advanced: bool = False
    #: the advanced group it belongs to (a heading from prompts' [groups] is shown when it starts)
    group: str | None = None
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
    #: checks against the other answers (a block list's length for the model family); AnswerError
    fits: Callable[[Draft, Any], None] | None = None
    #: after the answer, show the per-block values that result (a block list)
    shows_blocks: bool = False
    #: the value earlier answers call for (an optimizer's learning rate), proposed while the config
    #: being edited leaves the field at its default
    follows: Callable[[Draft], Followed | None] | None = None
    #: an answer that is almost surely a mistake for another value, offered instead (a 10_name folder
    #: given for its parent)
    corrects: Callable[[Any], Correction | None] | None = None
    #: a warning about an accepted answer that the user confirms (a learning rate far off its range)
    confirm: Callable[[Draft, Any], str | None] | None = None

    def proposal(self, draft: Draft) -> Any:
        if self.follows is not None and field_value(draft.base, self.path) == field_default(self.path):
            followed = self.follows(draft)
            if followed is not None:
                return followed.value
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


def uses_conv_layers(draft: Draft) -> bool:
    """LoCon has 3x3 convs; LoHa/LoKr may (with a conv_dim)."""
    return draft.value("network.type") in (NetworkType.LOCON, NetworkType.LOHA, NetworkType.LOKR)


def has_conv_dim(draft: Draft) -> bool:
    return uses_conv_layers(draft) and draft.value("network.conv_dim") is not None


def uses_restarts(draft: Draft) -> bool:
    return draft.value("optim.lr_scheduler") == LrScheduler.COSINE_WITH_RESTARTS


def is_polynomial(draft: Draft) -> bool:
    return draft.value("optim.lr_scheduler") == LrScheduler.POLYNOMIAL


def scheduler_has_warmup(draft: Draft) -> bool:
    # constant and adafactor have no warmup (the config refuses the pair), so the question is not offered
    return draft.value("optim.lr_scheduler") not in (LrScheduler.CONSTANT, LrScheduler.ADAFACTOR)


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


def v_prediction_proposal(draft: Draft) -> bool:
    """The edited config's word; else what a diffusers folder's scheduler says (a single file's
    weights are tested only when it loads, so the user's answer stands for it)."""
    if draft.base.model.v_parameterization is not None:
        return draft.base.model.v_parameterization
    path = Path(str(draft.value("model.base_model")))
    if path.is_dir():
        from engine.models.prediction import prediction_of_folder

        return bool(prediction_of_folder(path).v)
    return False


def clip_skip_if_not_realistic(draft: Draft) -> int:
    # keep a loaded config's own clip_skip (say 3); "realistic" only ever means 1
    current = draft.base.model.clip_skip
    return current if current != 1 else 2


# ---- values that follow earlier answers -----------------------------------------------------------


def learning_rate_for_optimizer(draft: Draft) -> Followed:
    optimizer = draft.value("optim.optimizer")
    return Followed(suggested_learning_rate(optimizer), "optimizer", {"optimizer": optimizer.value})


def resolution_for_family(draft: Draft) -> Followed | None:
    family = draft.value("model.family")
    if family == ModelFamily.AUTO:
        family = detected_family(draft) or ModelFamily.SD1
    return Followed(suggested_resolution(family), "family", {"family": family.value.upper()})


def precision_for_machine(draft: Draft) -> Followed:
    from engine.config.machine import this_machine_at_a_glance

    machine = this_machine_at_a_glance()
    device = "CUDA" if machine.cuda else "CPU"
    return Followed(suggested_precision(machine.cuda, machine.bf16), "machine", {"device": device})


def bucket_bound(index: int) -> Callable[[Draft, dict[str, Any]], Followed | None]:
    """min (0) or max (1) bucket side for the resolution the draft trains at."""

    def follows(draft: Draft, data: dict[str, Any]) -> Followed | None:
        resolution = data["dataset"]["resolution"]
        try:
            bounds = bucket_bounds(resolution, int(data["dataset"]["bucket_reso_steps"]))
        except (TypeError, ValueError):  # a resolution the config refuses: its question says so
            return None
        shown = resolution if isinstance(resolution, int) else "x".join(map(str, resolution))
        return Followed(bounds[index], "resolution", {"resolution": str(shown)})

    return follows


#: fields that are not asked but follow answers while the edited config leaves them at their default
HIDDEN_FOLLOWERS: tuple[tuple[str, Callable[[Draft, dict[str, Any]], Followed | None]], ...] = (
    ("dataset.min_bucket_reso", bucket_bound(0)),
    ("dataset.max_bucket_reso", bucket_bound(1)),
)


def resolution_fits_buckets(draft: Draft, value: Any) -> None:
    from engine.config.rules import resolution_problems

    problem = next(resolution_problems(value, draft.value("dataset.bucket_reso_steps")), None)
    if problem is not None:
        raise AnswerError(None, message=render(problem, with_where=False))


def learning_rate_far_off(path: str) -> Callable[[Draft, Any], str | None]:
    def warning(draft: Draft, value: Any) -> str | None:
        from engine.config.rules import learning_rate_problems

        problem = next(learning_rate_problems(draft.value("optim.optimizer"), value), None)
        return None if problem is None else render(problem, with_where=False)

    return warning


def parent_folder_offer(value: Any) -> Correction | None:
    from engine.data.lint import parent_if_concept_folder

    if value is None or str(value).startswith("builtin:"):
        return None
    parent = parent_if_concept_folder(Path(value))
    if parent is None:
        return None
    return Correction(str(parent), "concept_folder", {"path": str(value), "parent": str(parent)})


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
LETS_QUESTIONS: tuple[Question, ...] = (
    Q("model.base_model", Kind.FILE, short=True, parse=clean_path, check=check_base_model),
    Q("dataset.img_folder", Kind.DIR, short=True, parse=clean_path, check=check_dataset, corrects=parent_folder_offer),
    Q("saving.output_folder", Kind.DIR, short=True, parse=clean_path, check=check_output_folder),
    Q("model.lowram", Kind.CONFIRM, short=True),
    Q("optim.optimizer", Kind.SELECT, short=True, choices=tuple(Optimizer)),
    Q("model.family", Kind.CONFIRM, short=True, yes=ModelFamily.SD2, no=family_if_not_sd2,
      propose=likely_family, detail=family_detail),
    Q("model.clip_skip", Kind.CONFIRM, short=True, yes=1, no=clip_skip_if_not_realistic),
    Q("model.v_parameterization", Kind.CONFIRM, short=True, when=is_sd2, propose=v_prediction_proposal),
    Q(f"{ASK}reg_images", Kind.CONFIRM, short=True, propose=is_set_in_base("dataset.reg_img_folder")),
    Q("dataset.reg_img_folder", Kind.DIR, short=True, when=wants("reg_images"), parse=clean_path,
      check=check_reg_folder, corrects=parent_folder_offer),
    Q(f"{ASK}resume_lora", Kind.CONFIRM, short=True, propose=is_set_in_base("network.network_weights")),
    Q("network.network_weights", Kind.FILE, short=True, when=wants("resume_lora"), parse=clean_path,
      check=check_file),
    Q("dataset.flip_aug", Kind.CONFIRM, short=True),
    Q("training.batch_size", Kind.INT),
    Q("training.epochs", Kind.INT),
    Q("network.dim", Kind.INT),
    Q("network.alpha", Kind.FLOAT, propose=half_of("network.dim")),
    Q("network.type", Kind.SELECT, choices=tuple(NetworkType)),
    Q("network.conv_dim", Kind.INT, when=uses_conv_layers, optional=True, propose=base_or("network.conv_dim", 32)),
    Q("network.conv_alpha", Kind.FLOAT, when=has_conv_dim, propose=same_as("network.conv_dim")),
    Q("dataset.resolution", Kind.TEXT, parse=parse_resolution, follows=resolution_for_family,
      fits=resolution_fits_buckets),
    Q("optim.learning_rate", Kind.FLOAT, follows=learning_rate_for_optimizer,
      confirm=learning_rate_far_off("optim.learning_rate")),
    Q("optim.text_encoder_lr", Kind.FLOAT, optional=True, confirm=learning_rate_far_off("optim.text_encoder_lr")),
    Q("optim.unet_lr", Kind.FLOAT, optional=True, confirm=learning_rate_far_off("optim.unet_lr")),
    # the adafactor schedule needs Adafactor's relative_step argument, which the wizard does not ask
    Q("optim.lr_scheduler", Kind.SELECT, choices=tuple(s for s in LrScheduler if s != LrScheduler.ADAFACTOR)),
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
    Q("optim.mixed_precision", Kind.SELECT, choices=tuple(MixedPrecision), follows=precision_for_machine),
    Q("dataset.cache_latents", Kind.CONFIRM),
    Q(f"{ASK}min_snr", Kind.CONFIRM, propose=is_set_in_base("training.min_snr_gamma")),
    Q("training.min_snr_gamma", Kind.FLOAT, when=wants("min_snr"), propose=base_or("training.min_snr_gamma", 5.0)),
)

# ---- advanced settings ----------------------------------------------------------------------------
# Behind "advanced settings?" (default no), in the groups of the kohya_ss GUI's advanced panel. Block
# lists take a preset or numbers; each answer is checked against the model family's block count and
# the resulting per-block values are shown (wizard/review.block_table).

LR_WEIGHTS = ("network.down_lr_weight", "network.mid_lr_weight", "network.up_lr_weight")
BLOCK_LIST_FIELDS = ("network.block_dims", "network.block_alphas", "network.conv_block_dims", "network.conv_block_alphas")


def any_set_in_base(*paths: str) -> Callable[[Draft], bool]:
    return lambda draft: any(is_set_in_base(path)(draft) for path in paths)


def block_family(draft: Draft) -> ModelFamily:
    """The family block lists are counted for: the answered family, else what the model's header or
    the edited config says; the built-in demo model is an SD1."""
    family = draft.value("model.family")
    if family == ModelFamily.AUTO:
        family = detected_family(draft) or ModelFamily.SD1
    return family


def _number_items(text: str) -> list[str]:
    items = [item.strip() for item in text.strip().strip("[]").split(",")]
    if any(not item for item in items):
        raise AnswerError("block_list_gap")
    return items


def parse_lr_weight(text: str) -> Any:
    """"cosine+0.2" stays a preset (checked here); "1, 0.5, 0" becomes a list of numbers."""
    from engine.network.blocks import parse_block_values, preset_weights

    items = _number_items(text)
    try:
        if len(items) == 1 and not is_number(items[0]):
            preset_weights(items[0], 12, field="this answer")
            return items[0]
        return parse_block_values(",".join(items), 12, field="this answer", presets=False)
    except ConfigError as err:
        raise AnswerError(None, message=str(err)) from None


def parse_mid_weight(text: str) -> Any:
    """One number, or a list (SDXL has three middle blocks)."""
    items = _number_items(text)
    if not all(is_number(item) for item in items):
        raise AnswerError("not_numbers")
    values = [float(item) for item in items]
    return values[0] if len(values) == 1 else values


def parse_number_list(text: str) -> list[str]:
    """Numbers separated by commas, handed to the config field as typed (it checks int or float)."""
    items = _number_items(text)
    if not all(is_number(item) for item in items):
        raise AnswerError("not_numbers")
    return items


def fits_lr_weights(path: str) -> Callable[[Draft, Any], None]:
    """The down/mid/up list fits the family's block counts (with the other two as answered so far)."""

    def fits(draft: Draft, value: Any) -> None:
        from engine.network.blocks import lr_weights

        parts = {p: (value if p == path else draft.value(p)) for p in LR_WEIGHTS}
        try:
            lr_weights(*parts.values(), block_family(draft))
        except ConfigError as err:
            raise AnswerError(None, message=str(err)) from None

    return fits


def fits_block_list(path: str) -> Callable[[Draft, Any], None]:
    def fits(draft: Draft, value: Any) -> None:
        from engine.network.blocks import block_list_problems

        if value is None:
            return
        problems = block_list_problems(path.split(".")[1], value, block_family(draft))
        if problems:
            raise AnswerError(None, message=render(problems[0], with_where=False))

    return fits


def block_values(draft: Draft) -> dict[str, list[float]]:
    """The per-block values the draft's answers give: "lr" (LR weights after the zero threshold) and
    each block list that is set, all in block order. Empty when no block setting is set."""
    from engine.network.blocks import lr_weights

    family = block_family(draft)
    out: dict[str, list[float]] = {}
    parts = [draft.value(p) for p in LR_WEIGHTS]
    threshold = draft.value("network.block_lr_zero_threshold")
    if any(v is not None for v in parts) or threshold:
        try:
            out["lr"] = lr_weights(*parts, family, zero_threshold=threshold)
        except ConfigError:
            pass  # the answer that breaks it is refused when it is typed; the table waits for a fix
    for path in BLOCK_LIST_FIELDS:
        values = draft.value(path)
        if values is not None and len(values) == len(block_labels_for(family)):
            out[path.split(".")[1]] = list(values)
    return out


def block_labels_for(family: ModelFamily) -> list[str]:
    from engine.network.blocks import block_labels

    return block_labels(family)


def wants_block_lr(draft: Draft) -> bool:
    return wants("block_lr")(draft)


def wants_conv_block_dims(draft: Draft) -> bool:
    return wants("block_dims")(draft) and has_conv_dim(draft)


def resumes_from_lora(draft: Draft) -> bool:
    return wants("resume_lora")(draft)


def not_l2(draft: Draft) -> bool:
    return draft.value("training.loss_type") != LossType.L2


def not_v_prediction(draft: Draft) -> bool:
    return not draft.value("model.v_parameterization")


def is_multires(draft: Draft) -> bool:
    return draft.value("training.noise_offset_type") == NoiseOffsetType.MULTIRES


def has_noise_offset(draft: Draft) -> bool:
    return draft.value("training.noise_offset_type") == NoiseOffsetType.ORIGINAL and bool(
        draft.value("training.noise_offset")
    )


def is_set(path: str) -> Predicate:
    return lambda draft: draft.value(path) is not None


def saves_state(draft: Draft) -> bool:
    return bool(draft.value("saving.save_state"))


def uses_fp16(draft: Draft) -> bool:
    return draft.value("optim.mixed_precision") == MixedPrecision.FP16


def uses_bf16(draft: Draft) -> bool:
    return draft.value("optim.mixed_precision") == MixedPrecision.BF16


def caches_latents(draft: Draft) -> bool:
    return bool(draft.value("dataset.cache_latents"))


def both(first: Predicate, second: Predicate) -> Predicate:
    return lambda draft: first(draft) and second(draft)


def adv(path: str, kind: Kind, group: str, **kw: Any) -> Question:
    """An advanced question of `group` (asked after loading a config too, when advanced is yes)."""
    return Question(path, kind, advanced=True, short=True, group=group, **kw)


ADVANCED_QUESTIONS: tuple[Question, ...] = (
    Q(ADVANCED, Kind.CONFIRM, short=True, propose=fixed(False)),
    # blocks
    adv("ask.block_lr", Kind.CONFIRM, "blocks", propose=any_set_in_base(*LR_WEIGHTS)),
    *(
        adv(path, Kind.TEXT, "blocks", when=wants_block_lr, optional=True, shows_blocks=True,
                 parse=parse_mid_weight if path == "network.mid_lr_weight" else parse_lr_weight,
                 fits=fits_lr_weights(path))
        for path in LR_WEIGHTS
    ),
    adv("network.block_lr_zero_threshold", Kind.FLOAT, "blocks", when=wants_block_lr, shows_blocks=True),
    adv("ask.block_dims", Kind.CONFIRM, "blocks", propose=any_set_in_base(*BLOCK_LIST_FIELDS)),
    *(
        adv(path, Kind.TEXT, "blocks", when=wants_conv_block_dims if "conv" in path else wants("block_dims"),
                 optional=True, shows_blocks=True, parse=parse_number_list, fits=fits_block_list(path))
        for path in BLOCK_LIST_FIELDS
    ),
    adv("network.dim_from_weights", Kind.CONFIRM, "blocks", when=resumes_from_lora),
    # dropouts (and the other regularisers)
    adv("network.dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("network.rank_dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("network.module_dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("optim.scale_weight_norms", Kind.FLOAT, "dropouts", optional=True),
    adv("training.stop_text_encoder_training", Kind.INT, "dropouts"),
    # timesteps and loss
    adv("training.min_timestep", Kind.INT, "timesteps_loss"),
    adv("training.max_timestep", Kind.INT, "timesteps_loss"),
    adv("training.loss_type", Kind.SELECT, "timesteps_loss", choices=tuple(LossType)),
    adv("training.huber_c", Kind.FLOAT, "timesteps_loss", when=not_l2, optional=True),
    adv("training.huber_schedule", Kind.SELECT, "timesteps_loss", when=not_l2, choices=tuple(HuberSchedule)),
    adv("training.debiased_estimation_loss", Kind.CONFIRM, "timesteps_loss"),
    adv("training.v_pred_like_loss", Kind.FLOAT, "timesteps_loss", when=not_v_prediction, optional=True),
    adv("training.zero_terminal_snr", Kind.CONFIRM, "timesteps_loss"),
    adv("training.ip_noise_gamma", Kind.FLOAT, "timesteps_loss", optional=True),
    adv("training.noise_offset_type", Kind.SELECT, "timesteps_loss", choices=tuple(NoiseOffsetType)),
    adv("training.multires_noise_iterations", Kind.INT, "timesteps_loss", when=is_multires,
             propose=base_or("training.multires_noise_iterations", 6)),
    adv("training.multires_noise_discount", Kind.FLOAT, "timesteps_loss", when=is_multires),
    adv("training.adaptive_noise_scale", Kind.FLOAT, "timesteps_loss", when=has_noise_offset, optional=True),
    adv("training.noise_offset_random_strength", Kind.CONFIRM, "timesteps_loss", when=has_noise_offset),
    adv("dataset.weighted_captions", Kind.CONFIRM, "timesteps_loss"),
    # saving
    adv("saving.save_every_n_steps", Kind.INT, "saving", optional=True),
    adv("saving.save_last_n_steps", Kind.INT, "saving", when=is_set("saving.save_every_n_steps"), optional=True),
    adv("saving.save_last_n_epochs", Kind.INT, "saving", when=is_set("saving.save_every_n_epochs"),
             optional=True),
    adv("saving.save_model_as", Kind.SELECT, "saving", choices=tuple(SaveFormat)),
    adv("saving.save_precision", Kind.SELECT, "saving", choices=tuple(SavePrecision)),
    adv("saving.save_state", Kind.CONFIRM, "saving"),
    adv("saving.save_last_n_epochs_state", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.save_last_n_steps_state", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.save_state_every_n_minutes", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.no_metadata", Kind.CONFIRM, "saving"),
    adv("logging.log_dir", Kind.DIR, "saving", optional=True, parse=clean_path),
    adv("logging.log_prefix", Kind.TEXT, "saving", when=is_set("logging.log_dir"), optional=True),
    # performance
    adv("optim.gradient_checkpointing", Kind.CONFIRM, "performance"),
    adv("optim.gradient_accumulation_steps", Kind.INT, "performance"),
    adv("optim.full_fp16", Kind.CONFIRM, "performance", when=uses_fp16),
    adv("optim.full_bf16", Kind.CONFIRM, "performance", when=uses_bf16),
    adv("dataset.cache_latents_to_disk", Kind.CONFIRM, "performance", when=caches_latents),
    adv("dataset.vae_batch_size", Kind.INT, "performance", when=caches_latents),
    adv("dataset.max_data_loader_n_workers", Kind.INT, "performance"),
    adv("dataset.persistent_data_loader_workers", Kind.CONFIRM, "performance"),
    adv("model.attention", Kind.SELECT, "performance", choices=tuple(Attention)),
)
QUESTIONS: tuple[Question, ...] = (*LETS_QUESTIONS, *ADVANCED_QUESTIONS)

QUESTIONS_BY_PATH: dict[str, Question] = {q.path: q for q in (*LOAD_QUESTIONS, *QUESTIONS)}


def question_list(*, loaded: bool) -> tuple[Question, ...]:
    """The questions for a new config, or the short list after loading one (LETS B1-J), each followed
    by "advanced settings?" and the advanced questions (out of play until that is answered yes)."""
    return tuple(q for q in QUESTIONS if q.short or not loaded)
