"""Text that fits the terminal: prose wraps between words (CJK text between any two characters,
as those languages break lines), a path is never cut, and nothing is cropped with "…".

Rich would wrap prose too, but it folds a long path across lines, and a path split by a line break
cannot be copied; here a path (or a name) longer than a line goes whole on its own line (the
terminal soft-wraps it, which copies as one piece). Every message of the wizard is printed through
`say`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape

#: prose is wrapped at this width at most, however wide the terminal: long lines are hard to read
MAX_WIDTH = 100


def is_path(word: str) -> bool:
    return "/" in word or "\\" in word


def kept_whole(word: str) -> bool:
    """A path, or a word of narrow characters (a folder or file name, an identifier): copied as a
    whole, so never cut. Text of wide (CJK) characters has no spaces and breaks anywhere."""
    return is_path(word) or cell_len(word) == len(word)


def _fold(word: str, width: int) -> list[str]:
    """A word wider than `width` in pieces of at most `width` cells (for text without spaces)."""
    pieces, piece = [], ""
    for char in word:
        if piece and cell_len(piece + char) > width:
            pieces.append(piece)
            piece = ""
        piece += char
    return [*pieces, piece] if piece else pieces


def wrap(text: str, width: int, indent: str = "", more: str | None = None) -> list[str]:
    """Lines of at most `width` cells, each starting with `indent` (the first) or `more` (the
    others; default `indent`). Words stay whole; a path or name wider than a line stands alone on its
    line, uncut; text of wide characters (Chinese, Japanese) breaks between characters."""
    more = indent if more is None else more
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = indent if not lines else more
        start = len(line)
        for word in paragraph.split(" "):
            room = width - cell_len(line)
            gap = "" if len(line) == start else " "
            if cell_len(gap + word) <= room:
                line += gap + word
                continue
            if kept_whole(word):
                if len(line) > start:
                    lines.append(line)
                    line = more
                line += word  # a path wider than the line stays whole: the terminal wraps it
                continue
            # text of wide characters (no spaces between words): fill this line, then whole lines
            pieces = _fold(word, max(1, room - len(gap))) if room - len(gap) > 1 else []
            if pieces:
                line += gap + pieces[0]
                rest = word[len(pieces[0]):]
            else:
                rest = word
            for piece in _fold(rest, max(1, width - len(more))):
                lines.append(line)
                line = more + piece
        lines.append(line)
    return lines


#: the width `Screen.say` wraps at when the output is not a terminal: never reached by a message
UNWRAPPED = 1 << 20


def width_of(console: Console) -> int:
    return max(40, min(console.width, MAX_WIDTH))


@dataclass
class Screen:
    """The console, the texts of the user's language and how the program was started (hints name
    the command the user typed)."""

    console: Console
    texts: dict[str, Any]
    command: str = "lora-wizard"
    lang: str = "en"
    #: False where the output is a file or a pipe (an overnight queue's log): each message then stays
    #: on one line, so `grep` finds a sentence whatever the length of the paths in it
    wrap_prose: bool = True

    @property
    def width(self) -> int:
        return width_of(self.console) if self.wrap_prose else UNWRAPPED

    def text(self, table: str, key: str, **fields: Any) -> str:
        """A message of prompts/<lang>.toml, its {placeholders} filled."""
        return self.texts[table][key].format(**fields)

    def say(self, text: str, style: str | None = None, indent: str = "", more: str | None = None) -> None:
        """Print `text` wrapped to the terminal (see `wrap`), in one style."""
        say(self.console, wrap(text, self.width, indent, more), style)

    def command_line(self, command: str) -> None:
        """A command to copy, on its own line and never wrapped (the terminal soft-wraps a long one)."""
        self.console.print("  " + escape(command), style="bold", highlight=False, soft_wrap=True)

    def blank(self) -> None:
        self.console.print()


def say(console: Console, lines: list[str], style: str | None = None) -> None:
    """Print lines as they are: no markup, no further wrapping (they are wrapped already)."""
    for line in lines:
        shown = escape(line) if style is None else f"[{style}]{escape(line)}[/]"
        console.print(shown, highlight=False, soft_wrap=True)
