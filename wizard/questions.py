"""The wizard's questions, as data: the list the flow asks from, in order.

    LOAD_QUESTIONS       "load a saved config?" and its path (wizard/lets_questions.py)
    LETS_QUESTIONS       the LETS order, then sample images (wizard/lets_questions.py)
    ADVANCED_QUESTIONS   behind "advanced settings?", in groups (wizard/advanced_questions.py)

What a question is and the draft its answers build: wizard/draft.py. When a question applies and
what it proposes: the named predicates of wizard/predicates.py. The wording of every question
lives in prompts/<lang>.toml under the question's `path`; no module here holds user-facing text.
"""

from __future__ import annotations

from wizard.advanced_questions import ADVANCED_QUESTIONS
from wizard.block_answers import block_family, block_values
from wizard.draft import (
    ADVANCED,
    ASK,
    Draft,
    Kind,
    Question,
    field_default,
    field_value,
)
from wizard.lets_questions import LETS_QUESTIONS, LOAD_QUESTIONS
from wizard.predicates import detected_family

QUESTIONS: tuple[Question, ...] = (*LETS_QUESTIONS, *ADVANCED_QUESTIONS)

QUESTIONS_BY_PATH: dict[str, Question] = {q.path: q for q in (*LOAD_QUESTIONS, *QUESTIONS)}


def question_list(*, loaded: bool) -> tuple[Question, ...]:
    """The questions for a new config, or the short list after loading one (as LoRA_Easy_Training_Scripts did), each followed
    by "advanced settings?" and the advanced questions (out of play until that is answered yes)."""
    return tuple(q for q in QUESTIONS if q.short or not loaded)


__all__ = [
    "ADVANCED",
    "ASK",
    "LOAD_QUESTIONS",
    "QUESTIONS",
    "QUESTIONS_BY_PATH",
    "Draft",
    "Kind",
    "Question",
    "block_family",
    "block_values",
    "detected_family",
    "field_default",
    "field_value",
    "question_list",
]
