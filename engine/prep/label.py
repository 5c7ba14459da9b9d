"""Writing a caption file for each image with a model (the WD14 tagger, BLIP): the shared driver.

Images that already have a caption file are skipped unless `overwrite` is asked; an overwritten
caption is copied to the backup folder first. Each file is written whole (temporary file, then
rename) right after its batch is labelled, so Ctrl-C leaves finished files, untouched ones and no
half-written one; running the job again labels the rest. An image that cannot be read is listed
and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from engine.fileio import atomic_write_text
from engine.prep.backup import CaptionBackup
from engine.prep.folder import caption_path, collect_images
from engine.prep.progress import ItemProgress, NoProgress


class Labeler(Protocol):
    """A model that turns images into caption lines."""

    #: images per call of `label`
    batch_size: int

    def label(self, images: list) -> list[str]:
        """One caption line per PIL image, in order."""


@dataclass
class LabelResult:
    written: list[Path] = field(default_factory=list)  # new caption files
    replaced: list[Path] = field(default_factory=list)  # existing ones overwritten (backed up first)
    skipped: list[Path] = field(default_factory=list)  # images that had a caption (no overwrite)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images (or no text), and why

    @property
    def done(self) -> int:
        return len(self.written) + len(self.replaced)


@dataclass
class LabelJob:
    """What a labelling run will do, known before the model is loaded (for the prompt and counts)."""

    root: Path
    extension: str
    overwrite: bool
    images: list[Path]
    todo: list[Path]
    backup: CaptionBackup
    result: LabelResult
    written_now: set[Path] = field(default_factory=set)  # caption files this job has written

    @classmethod
    def for_folder(cls, root: Path, extension: str, *, overwrite: bool = False) -> LabelJob:
        images = collect_images(root)
        todo = [img for img in images if overwrite or not caption_path(img, extension).exists()]
        pending = set(todo)
        skipped = [img for img in images if img not in pending]
        return cls(Path(root), extension, overwrite, images, todo, CaptionBackup(root), LabelResult(skipped=skipped))

    def run(self, labeler: Labeler, progress: ItemProgress | None = None) -> LabelResult:
        progress = progress or NoProgress()
        progress.started(len(self.todo))
        batch: list[tuple[Path, object]] = []
        for image in self.todo:
            loaded = self._load(image)
            if loaded is None:
                progress.advanced(image)
                continue
            batch.append((image, loaded))
            if len(batch) >= labeler.batch_size:
                self._label(batch, labeler, progress)
                batch = []
        if batch:
            self._label(batch, labeler, progress)
        return self.result

    def _load(self, image: Path):
        from PIL import Image

        try:
            with Image.open(image) as img:
                img.load()
                return img.copy() if img.mode != "P" else img.convert("RGBA")
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for broken files
            self.result.failed.append((image, f"{type(exc).__name__}: {exc}"))
            return None

    def _label(self, batch: list[tuple[Path, object]], labeler: Labeler, progress: ItemProgress) -> None:
        lines = labeler.label([img for _, img in batch])
        for (image, _), line in zip(batch, lines, strict=True):
            if not line.strip():  # an empty file would silently replace the folder-name caption
                self.result.failed.append((image, "the model gave an empty caption"))
                progress.advanced(image)
                continue
            target = caption_path(image, self.extension)
            if target in self.written_now:  # a.png and a.jpg share a.txt
                self.result.failed.append((image, f"{target.name} was just written for another image of the same name"))
                progress.advanced(image)
                continue
            existed = target.exists()
            if existed and not self.overwrite:  # written meanwhile by someone else: keep it
                self.result.skipped.append(image)
                progress.advanced(image)
                continue
            if existed:
                self.backup.keep(target)
            atomic_write_text(target, line.strip() + "\n", overwrite=existed)
            (self.result.replaced if existed else self.result.written).append(target)
            self.written_now.add(target)
            progress.advanced(image)
