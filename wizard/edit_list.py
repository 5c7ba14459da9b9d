"""The review's "Edit an answer" list: every question asked, with its answer as the user gave it
(yes/no, a choice's title), filtered as the user types. questionary's search filter takes the
printable ASCII keys, so each entry also carries its setting's name (network.dim): typing "dim"
finds it in any language."""

from __future__ import annotations

from typing import Any

import questionary

from wizard.prompt_kit import GoBack, ready
from wizard.questions import Draft, Question
from wizard.review import answer_text

BACK = "back"


def edit_choices(draft: Draft, texts: dict[str, Any]) -> list[questionary.Choice]:
    labels = texts["review"]
    choices = []
    for q in draft.active():
        text = texts["questions"][q.path]
        shown = answer_text(q, draft.value(q.path), labels, text.get("choices"))
        choices.append(questionary.Choice(f"{text['message']}  {shown}   · {q.path}", value=q))
    choices.append(questionary.Choice(texts["ui"]["back"], value=BACK))
    return choices


def pick_question(draft: Draft, texts: dict[str, Any]) -> Question | None:
    """The question to answer again, chosen from those asked (None: back to the review)."""
    question = questionary.select(
        texts["ui"]["edit"],
        choices=edit_choices(draft, texts),
        use_search_filter=True,
        use_jk_keys=False,  # j and k are letters to filter with
        instruction=texts["ui"]["edit_instruction"],
    )
    try:
        picked = ready(question).unsafe_ask()
    except GoBack:
        return None
    return picked if isinstance(picked, Question) else None
