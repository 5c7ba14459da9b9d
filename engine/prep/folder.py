"""The images of a dataset folder and their caption files, as the prep jobs see them.

Jobs work on every image under the folder they are given, in sub-folders too, so they accept the
dataset folder (the parent of the `<repeats>_<name>` folders), one such folder, or a regularisation
folder alike. Hidden files and folders (a name starting with ".", like the caption backups) are
left out. A caption file is the image's name with the caption extension, beside it (the training
scan's rule, engine/data/dataset.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.data.layout import IMAGE_EXTENSIONS
from engine.errors import DatasetError


def collect_images(root: Path) -> list[Path]:
    """Every image under `root`, sorted by path; a DatasetError when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; give the dataset folder (or one of its <repeats>_<name> folders)")
    images = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images += [Path(folder) / name for name in files if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below it")
    return sorted(images)


def caption_path(image: Path, extension: str) -> Path:
    return Path(image).with_suffix(extension)


@dataclass(frozen=True, slots=True)
class CaptionText:
    """A caption file split as training reads it: the first line is the caption, the rest is kept
    as it is when the file is rewritten."""

    first_line: str
    rest: str  # everything after the first line break ("" when there is none)

    def with_first_line(self, line: str) -> str:
        return f"{line}\n{self.rest}"


def read_caption_text(path: Path) -> CaptionText:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is dropped, as training does
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: caption file is not UTF-8 (bad byte at position {exc.start}); re-save it as UTF-8") from None
    first, _, rest = text.partition("\n")
    return CaptionText(first.rstrip("\r").strip(), rest)


def shown(path: Path, root: Path) -> str:
    """A path as listed to the user: relative to the folder they named, when it is inside it."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
