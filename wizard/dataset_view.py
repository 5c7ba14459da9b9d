"""A dataset as training will see it, as lines of text: `lora-wizard dataset DIR` prints them, and
the wizard after its image folder question. Wording: prompts/<lang>.toml's [dataset_view].

Everything is wrapped to the terminal width (at most 80 columns, wrap() of wizard/screen.py); a
path longer than a line is printed whole on its own line, never cut. Also the progress bar of the
dataset tools (tagging, captioning, editing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from prompts import load_prompts
from wizard.screen import wrap

VIEW_WIDTH = 80
_LISTED = 10  # file names listed per section before "and N more"


def view_width(console: Console) -> int:
    return max(40, min(console.width, VIEW_WIDTH))


def rjust(text: str, width: int) -> str:
    """Right-aligned in `width` terminal cells (a CJK character takes two)."""
    return " " * max(0, width - cell_len(text)) + text


def names_listed(paths, root: Path, texts: dict[str, str]) -> str:
    from engine.prep.folder import shown

    names = [shown(p, root) for p in paths]
    listed = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return listed if more <= 0 else f"{listed} {texts['and_more'].format(count=more)}"


def _table_row(row: str, name: str, width: int) -> list[str]:
    """Numbers, then the folder name; a name too long for the line goes whole on the next one."""
    if cell_len(row) + cell_len(name) <= width:
        return [row + name]
    return [row.rstrip(), *wrap(name, width, "    ")]


def render_summary(summary, width: int = VIEW_WIDTH, texts: dict[str, Any] | None = None) -> list[str]:
    """The view as lines of text (no markup), each at most `width` columns except a long path.
    `texts`: prompts' [dataset_view] table (English when not given)."""
    from engine.prep.folder import shown
    from engine.prep.view import MAX_UPSCALE

    t = texts or load_prompts("en")["dataset_view"]
    s = summary
    w, h = s.resolution
    lines = wrap(t["heading"].format(root=s.root), width)
    mode = t["mode_off"] if not s.enable_bucket else (t["mode_no_upscale"] if s.no_upscale else t["mode_buckets"])
    lines += wrap(t["resolution"].format(size=f"{w}x{h}", mode=mode), width, "  ")
    lines.append("")
    columns = [(t["repeats"], 7), (t["images"], 6), (t["x_repeats"], 9), (t["no_caption"], 10)]
    widths = [max(n, cell_len(title)) for title, n in columns]
    lines.append("  " + "  ".join(rjust(title, n) for (title, _), n in zip(columns, widths)) + "  " + t["folder"])

    def numbers(*cells: object) -> str:
        return "  " + "  ".join(rjust(str(c), n) for c, n in zip(cells, widths)) + "  "

    for f in s.folders:
        missing = "-" if f.is_reg else len(f.missing_captions)
        row = numbers(f.repeats, f.images, f.uses, missing)
        lines += _table_row(row, f.name, width)
        if f.is_reg:
            lines += wrap(t["reg_note"], width, " " * cell_len(row))
    train = [f for f in s.folders if not f.is_reg]
    lines.append(numbers(t["total"], sum(f.images for f in train), s.num_train_images, s.missing_captions).rstrip())
    reg = t["reg_part"].format(count=s.num_reg_images) if s.num_reg_images else ""
    unused = t["unused_part"].format(count=s.unused_reg_images) if s.unused_reg_images else ""
    epoch = t["one_epoch"].format(images=s.num_train_images, reg=reg, steps=s.steps_per_epoch, batch=s.batch_size, unused=unused)
    lines += wrap(epoch, width, "  ", "  ")

    lines.append("")
    if s.missing_captions:
        lines += wrap(t["missing"].format(count=s.missing_captions), width)
        for f in train:
            if f.missing_captions:
                lines += wrap(f"{f.name}: {names_listed(f.missing_captions, f.folder, t)}", width, "  ", "    ")
    else:
        lines += wrap(t["all_captioned"], width)

    lines.append("")
    if s.top_tags:
        lines += wrap(t["top_tags"].format(count=s.captions_read), width)
        lines += wrap(", ".join(f"{tag} {count}" for tag, count in s.top_tags), width, "  ", "  ")
    lines.append("")

    lines += wrap(t["buckets"].format(size=f"{w}x{h}"), width)
    most = max(s.bucket_counts.values(), default=1)
    label_width = max((len(f"{bw}x{bh}") for bw, bh in s.bucket_counts), default=7)
    count_width = len(str(most))
    bar_room = max(10, width - (2 + label_width + 2 + count_width + 2))
    for (bw, bh), count in s.bucket_counts.items():
        bar = "█" * max(1, round(count / most * bar_room))
        lines.append(f"  {f'{bw}x{bh}':<{label_width}}  {count:>{count_width}}  {bar}")

    for title, items in (
        (t["enlarged"].format(count=len(s.upscaled)), s.upscaled),
        (t["too_small"].format(count=len(s.too_small), limit=f"{MAX_UPSCALE:g}"), s.too_small),
    ):
        if not items:
            continue
        lines.append("")
        lines += wrap(title, width)
        for item in items[:_LISTED * 2]:
            iw, ih = item.size
            bw, bh = item.bucket
            entry = t["enlarged_item"].format(path=shown(item.path, s.root), size=f"{iw}x{ih}", bucket=f"{bw}x{bh}", scale=f"{item.scale:.2f}")
            lines += wrap(entry, width, "  ", "    ")
        if len(items) > _LISTED * 2:
            lines.append("  " + t["and_more"].format(count=len(items) - _LISTED * 2))
    return lines


class RichItemProgress:
    """engine.prep.progress.ItemProgress as a rich progress bar."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.progress: Progress | None = None
        self.task = None

    def started(self, total: int) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{escape(self.title)}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.title, total=total)

    def advanced(self, item: Path) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
