"""Answers about U-Net blocks (the advanced "blocks" group): LR weights per block (a preset such as
cosine+0.2, or numbers), and ranks and alphas per block. Each answer is parsed here, checked against
the model family's block count, and turned into the per-block values the review's block table shows
(wizard/review.block_table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config.schema import ModelFamily
from engine.errors import ConfigError
from engine.network.blocks import is_number
from engine.problems import render
from wizard.checks import AnswerError
from wizard.draft import Draft
from wizard.predicates import detected_family

LR_WEIGHTS = ("network.down_lr_weight", "network.mid_lr_weight", "network.up_lr_weight")
BLOCK_LIST_FIELDS = ("network.block_dims", "network.block_alphas", "network.conv_block_dims", "network.conv_block_alphas")


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

