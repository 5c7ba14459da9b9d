"""Drafts: the answers of a wizard left with Ctrl-C, kept so that the next start continues from the
question where it stopped.

A draft is `saved_configs/drafts/<output name or 'draft'>-<time>.draft.json`: the config the answers
were given on (the defaults, or the file loaded, named in `loaded_from`), every answer, the order
they were given in (so "back" works after a restart) and the question being asked. Restored, it
asks every question not answered yet, in the order of the full list (or of the short list when it
began from a loaded file): a question never reached is asked, not silently defaulted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from engine.errors import ConfigError
from engine.fileio import atomic_write_text
from wizard.checks import AnswerError
from wizard.draft import ASK, Draft
from wizard.questions import QUESTIONS_BY_PATH, question_list

DRAFTS = "drafts"
SUFFIX = ".draft.json"
DRAFT_FORMAT = 1


@dataclass(frozen=True)
class KeptDraft:
    path: Path
    saved: str  # "2025-01-31 22:10", as written
    draft: Draft


def drafts_folder(folder: Path) -> Path:
    return Path(folder) / DRAFTS


def keep_draft(draft: Draft, folder: Path) -> Path:
    """Write the draft into `folder`/drafts/ (never over another file); returns its path."""
    name = draft.value("saving.output_name") or "draft"
    data = {
        "lora_wizard_draft": DRAFT_FORMAT,
        "saved": time.strftime("%Y-%m-%d %H:%M"),
        "loaded_from": None if draft.loaded_from is None else str(draft.loaded_from),
        "asking": draft.asking,
        "asked": draft.asked,
        "base": draft.base.model_dump(mode="json"),
        "answers": to_jsonable_python(draft.answers),
    }
    stem = drafts_folder(folder) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = next(p for n in count(1) if not (p := Path(f"{stem}{f'-{n}' if n > 1 else ''}{SUFFIX}")).exists())
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def kept_drafts(folder: Path) -> list[Path]:
    """The drafts in `folder`/drafts/, newest first."""
    found = drafts_folder(folder).glob(f"*{SUFFIX}")
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


def read_draft(path: Path, folder: Path) -> KeptDraft:
    """The draft kept in `path`, ready to continue. An answer that no longer holds (a folder since
    removed, a value this version refuses) is dropped, so its question is asked again. A file
    that is not a draft is a ConfigError."""
    from engine.config.io import config_from_dict

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("lora_wizard_draft") != DRAFT_FORMAT:
            raise ValueError(f"format {data.get('lora_wizard_draft')!r}, this version reads {DRAFT_FORMAT}")
        base = config_from_dict(data["base"], str(path))
        answers: dict[str, Any] = data["answers"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a draft this version can read ({exc})") from None
    loaded_from = data.get("loaded_from")
    draft = Draft(
        base,
        question_list(loaded=loaded_from is not None),
        loaded_from=None if loaded_from is None else Path(loaded_from),
        folder=Path(folder),
    )
    for key, raw in answers.items():
        value = restored_answer(key, raw)
        if value is not _DROPPED:
            draft.answers[key] = value
    draft.asked = [p for p in data.get("asked", []) if p in draft.answers]
    draft.asking = data.get("asking")
    return KeptDraft(Path(path), str(data.get("saved", "")), draft)


_DROPPED = object()


def restored_answer(path: str, raw: Any) -> Any:
    """A kept answer as its question gives it, checked again; _DROPPED when it no longer holds."""
    from wizard.ask import validate_field

    q = QUESTIONS_BY_PATH.get(path)
    if q is None:  # a question this version no longer asks
        return _DROPPED
    if path.startswith(ASK):
        return raw if isinstance(raw, bool) else _DROPPED
    try:
        value = validate_field(path, raw)
        if q.check is not None and value is not None:
            q.check(value)
    except AnswerError:
        return _DROPPED
    return value
