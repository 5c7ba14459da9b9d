"""Folder-wide caption edits: compute every change first, then apply them with a backup.

`plan_changes` reads each image's caption file and asks a rewrite rule for its new first line; only
files whose line really changes are listed, so a dry run shows exactly what applying would do.
`apply_changes` copies each original into the backup folder before it replaces the file with a
temporary-file-and-rename write: interrupted at any point, a file is either the original or the
new text, and every replaced original is in the backup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.fileio import atomic_write_text
from engine.prep.backup import CaptionBackup
from engine.prep.clean import CleanAs, clean_text
from engine.prep.folder import (
    CaptionText,
    caption_path,
    collect_images,
    read_caption_text,
)
from engine.prep.progress import ItemProgress, NoProgress
from engine.prep.tags import (
    join_tags,
    remove_tags,
    replace_tags,
    split_tags,
    with_trigger,
)

Rewrite = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class CaptionChange:
    path: Path
    old: str  # the first line now
    new: str  # the first line after the edit
    text: CaptionText


@dataclass
class EditResult:
    changed: list[Path] = field(default_factory=list)
    backup: CaptionBackup | None = None


def plan_changes(root: Path, extension: str, rewrite: Rewrite) -> list[CaptionChange]:
    """The caption files under `root` (those of an image) whose first line `rewrite` changes."""
    changes = []
    for image in collect_images(root):
        path = caption_path(image, extension)
        if not path.is_file():
            continue
        text = read_caption_text(path)
        new = rewrite(text.first_line)
        if new != text.first_line:
            changes.append(CaptionChange(path, text.first_line, new, text))
    return changes


def apply_changes(
    changes: list[CaptionChange],
    backup: CaptionBackup,
    progress: ItemProgress | None = None,
    result: EditResult | None = None,
) -> EditResult:
    """Write the changes, each original copied to `backup` first. Pass `result` to see what was
    done so far if the job is interrupted."""
    progress = progress or NoProgress()
    result = result or EditResult()
    result.backup = backup
    progress.started(len(changes))
    for change in changes:
        backup.keep(change.path)
        atomic_write_text(change.path, change.text.with_first_line(change.new), overwrite=True)
        result.changed.append(change.path)
        progress.advanced(change.path)
    return result


# ---- rewrite rules -----------------------------------------------------------------------------


def clean_rule(kind: CleanAs = CleanAs.AUTO) -> Rewrite:
    """sd-scripts' clean_captions_and_tags rules (engine/prep/clean.py)."""
    return lambda line: clean_text(line, kind)


def tag_edit_rule(
    *, trigger: str | None = None, remove: list[str] | None = None, rename: dict[str, str] | None = None
) -> Rewrite:
    """Rename tags, then remove tags, then put the trigger word first.

    A line none of these touch is left exactly as written (its spacing included); a changed line
    is written with ", " between tags and without empty tags.
    """

    def rewrite(line: str) -> str:
        tags = split_tags(line)
        edited = replace_tags(tags, rename) if rename else list(tags)
        edited = remove_tags(edited, remove or [])
        edited = with_trigger(edited, trigger)
        return line if edited == tags else join_tags(edited)

    return rewrite
