"""How a dataset job reports progress: the job calls these, the front-end draws a bar (or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ItemProgress(Protocol):
    def started(self, total: int) -> None:
        """`total` items will be processed."""

    def advanced(self, item: Path) -> None:
        """One more item is done (written, skipped or failed)."""


class NoProgress:
    def started(self, total: int) -> None:
        pass

    def advanced(self, item: Path) -> None:
        pass
