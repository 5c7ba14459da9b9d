"""The named predicates, proposals and follow rules the questions are built from: when a question
applies (`wants("warmup")`, `is_sd2`), what it proposes (`base_or`, `half_of`), which values follow
earlier answers (an optimizer's learning rate, an SDXL model's resolution) and the checks an answer
gets against the others. No user-facing text: reasons name lines of prompts/<lang>.toml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config.defaults import (
    bucket_bounds,
    suggested_learning_rate,
    suggested_precision,
    suggested_resolution,
)
from engine.config.schema import (
    LossType,
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    NoiseOffsetType,
)
from engine.problems import render
from wizard.checks import AnswerError
from wizard.draft import (
    ASK,
    Correction,
    Draft,
    Followed,
    Predicate,
    field_default,
    field_value,
)

# ---- proposals ------------------------------------------------------------------------------------

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



CAPTION_DROPOUT = (
    "dataset.caption_dropout_rate",
    "dataset.caption_dropout_every_n_epochs",
    "dataset.caption_tag_dropout_rate",
)


def any_caption_dropout_in_base(draft: Draft) -> bool:
    return any(is_set_in_base(path)(draft) for path in CAPTION_DROPOUT)



def any_set_in_base(*paths: str) -> Callable[[Draft], bool]:
    return lambda draft: any(is_set_in_base(path)(draft) for path in paths)



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


def logs_to_tensorboard(draft: Draft) -> bool:
    return bool(draft.value("logging.tensorboard"))


def uses_fp16(draft: Draft) -> bool:
    return draft.value("optim.mixed_precision") == MixedPrecision.FP16


def uses_bf16(draft: Draft) -> bool:
    return draft.value("optim.mixed_precision") == MixedPrecision.BF16


def caches_latents(draft: Draft) -> bool:
    return bool(draft.value("dataset.cache_latents"))


def both(first: Predicate, second: Predicate) -> Predicate:
    return lambda draft: first(draft) and second(draft)



# ---- sample images ----------------------------------------------------------------------------------


def samples_by_default(draft: Draft) -> bool:
    """Sample images are proposed on a GPU, where a few images cost seconds; on the CPU (the demo,
    a check) they would cost more than the training itself. A loaded config keeps its own choice."""
    if is_set_in_base("sampling.sample_prompts")(draft):
        return True
    from engine.config.machine import this_machine_at_a_glance

    return this_machine_at_a_glance().cuda


def first_caption(draft: Draft) -> str:
    """A prompt to propose: the first caption of the dataset (what the LoRA learns to draw), else
    the name of its first concept folder (what an image without a caption is captioned with)."""
    if field_value(draft.base, "sampling.sample_prompts") is not None:
        return str(field_value(draft.base, "sampling.sample_prompts"))
    from engine.config.schema import SAMPLE_DATASET

    folder = str(draft.value("dataset.img_folder"))
    if folder == SAMPLE_DATASET:
        from engine.data.sample_data import sample_dataset_dir

        folder = str(sample_dataset_dir())
    concepts = sorted(p for p in Path(folder).iterdir() if p.is_dir()) if Path(folder).is_dir() else []
    for concept in concepts:
        for caption in sorted(concept.glob("*.txt")):
            text = caption.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            if text and text[0].strip():
                return text[0].strip()
    return concepts[0].name.partition("_")[2] if concepts else ""
