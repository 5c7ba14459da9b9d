"""Originals kept before a caption file is replaced: nothing is changed without a copy.

The copies go to one folder per job, `<dataset>/.caption-backup-<YYYYmmdd-HHMMSS>/`, mirroring
the paths below the dataset folder (`10_mychar/img1.txt` -> `.caption-backup-.../10_mychar/img1.txt`),
so copying the backup's content back over the dataset restores it. The leading dot keeps the folder
out of training (the dataset scan skips hidden folders) and out of the prep jobs. It is created
with the first copy: a job that changes nothing leaves no empty folder behind.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine.fileio import atomic_write

BACKUP_PREFIX = ".caption-backup-"


class CaptionBackup:
    def __init__(self, root: Path, stamp: str | None = None) -> None:
        self.root = Path(root)
        self.stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        self.folder: Path | None = None
        self.kept: list[Path] = []

    def keep(self, path: Path) -> Path:
        """Copy `path` into the backup folder (complete, or not at all) and return the copy."""
        path = Path(path)
        if self.folder is None:
            self.folder = self._new_folder()
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            relative = Path(path.name)
        copy = self.folder / relative
        if copy.exists():  # kept earlier in this job: that copy is the original, keep it
            return copy
        atomic_write(copy, lambda tmp: shutil.copy2(path, tmp))
        self.kept.append(copy)
        return copy

    def _new_folder(self) -> Path:
        n = 1
        while True:
            folder = self.root / f"{BACKUP_PREFIX}{self.stamp}{'' if n == 1 else f'-{n}'}"
            try:
                folder.mkdir(parents=True)  # never reuse a folder: two jobs in one second get two
                return folder
            except FileExistsError:
                n += 1
