"""Caption rules: reading, per-use processing, tag counts, weighted-caption parsing, token chunks.

The rules reproduce kohya-ss/sd-scripts so that the same caption, epoch, step and random state
give the same text: `BaseDataset.process_caption`, `read_caption` and `set_tag_frequency`
(library/train_util.py), the A1111 attention parser of library/custom_train_functions.py, and the
75-token chunking of `TokenizeStrategy._get_input_ids` / `SdTextEncodingStrategy.encode_tokens`
(strategy_base.py, strategy_sd.py, strategy_sdxl.py). Randomness comes only from the
`random.Random` passed in.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import DatasetError

if TYPE_CHECKING:  # torch is imported by merge_chunk_states only: reading and counting captions
    import torch  # (the dataset view in the wizard) must not pay for it

#: tokens per chunk between the start and end token (CLIP's 77-token window minus the two)
CHUNK = 75


@dataclass(frozen=True, slots=True)
class CaptionRules:
    """One folder's caption options (sd-scripts' subset options of the same names)."""

    shuffle: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str | None = None
    separator: str = ","
    secondary_separator: str | None = None
    wildcard: bool = False
    prefix: str | None = None
    suffix: str | None = None
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0
    tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0.0

    @property
    def changes_per_use(self) -> bool:
        """True when two uses of one caption can give different texts (ignoring whole-caption
        dropout, which only swaps in "")."""
        return self.shuffle or self.tag_dropout_rate > 0 or self.wildcard or self.token_warmup_step > 0


def apply_rules(caption: str, rules: CaptionRules, *, epoch: int, rng: random.Random, step: int = 0, total_steps: int = 0) -> str:
    """`process_caption` with a folder's rules."""
    return process_caption(caption, epoch=epoch, rng=rng, step=step, total_steps=total_steps, **asdict(rules))


def read_caption(path: Path, *, all_lines: bool = False) -> str:
    """The first line of a caption file, stripped (sd-scripts reads only that line); with
    `all_lines` (wildcard captions) every non-blank line, stripped, joined by newlines: each line
    is then an alternative, as in sd-scripts.

    A UTF-8 byte-order mark is dropped (sd-scripts would keep it glued to the first tag).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: caption file is not UTF-8 (bad byte at position {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    lines = text.splitlines()
    if not lines:
        raise DatasetError(
            f"{path}: caption file is empty; write a caption, or delete the file to use the "
            "folder's name as the caption"
        )
    if all_lines:
        return "\n".join(line.strip() for line in lines if line.strip())
    return lines[0].strip()


def process_caption(
    caption: str,
    *,
    epoch: int,
    rng: random.Random,
    shuffle: bool = False,
    keep_tokens: int = 0,
    tag_dropout_rate: float = 0.0,
    dropout_rate: float = 0.0,
    dropout_every_n_epochs: int = 0,
    keep_tokens_separator: str | None = None,
    separator: str = ",",
    secondary_separator: str | None = None,
    wildcard: bool = False,
    prefix: str | None = None,
    suffix: str | None = None,
    token_warmup_min: int = 1,
    token_warmup_step: float = 0.0,
    step: int = 0,
    total_steps: int = 0,
) -> str:
    """The caption as used for one sample in `epoch` (1-based) after `step` optimizer steps of
    `total_steps`, in sd-scripts' order.

    0. `prefix` and `suffix` are joined on with a space.
    1. Whole-caption dropout gives "": by `dropout_rate` (one draw, made whenever the rate is > 0),
       or in every epoch divisible by `dropout_every_n_epochs`.
    2. With `wildcard`: one line is drawn when there are several, then each `{a|b|c}` is replaced
       by one of its choices (`{{` and `}}` are literal braces). Without: only the first line.
    3. With shuffle, tag dropout or a token warm-up on: split on `separator`, strip each tag; the
       first `keep_tokens` tags (or the part before `keep_tokens_separator`, and after its second
       occurrence) stay fixed; during the warm-up only the first tags of the rest are used (from
       `token_warmup_min` up to all at `token_warmup_step` steps, a share of `total_steps` when
       below 1); the rest is shuffled, then each tag dropped with `tag_dropout_rate`; joined with
       ", ". With all three off the line is used untouched.
    4. `secondary_separator` is replaced by `separator` (tags joined by it moved as one).
    """
    if prefix:
        caption = prefix + " " + caption
    if suffix:
        caption = caption + " " + suffix
    dropped = dropout_rate > 0 and rng.random() < dropout_rate
    if dropped or (dropout_every_n_epochs > 0 and epoch % dropout_every_n_epochs == 0):
        return ""
    caption = _pick_wildcards(caption, rng) if wildcard else caption.split("\n")[0]
    if shuffle or tag_dropout_rate > 0 or token_warmup_step > 0:
        caption = _process_tags(
            caption, rng, shuffle, keep_tokens, tag_dropout_rate, keep_tokens_separator, separator,
            token_warmup_min, _warmup_steps(token_warmup_step, total_steps), step,
        )
    if secondary_separator:
        caption = caption.replace(secondary_separator, separator)
    return caption


def _warmup_steps(token_warmup_step: float, total_steps: int) -> int:
    """A share below 1 is of the run's steps, rounded down (sd-scripts converts it once)."""
    if token_warmup_step < 1:
        return math.floor(token_warmup_step * total_steps)
    return int(token_warmup_step)


_WILDCARD = re.compile(r"\{([^}]+)\}")


def _pick_wildcards(caption: str, rng: random.Random) -> str:
    if "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    # "{{" and "}}" are literal braces: hidden behind markers the caption does not contain
    open_mark, close_mark = "\u2985", "\u2986"
    while open_mark in caption or close_mark in caption:
        open_mark += "\u2985"
        close_mark += "\u2986"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = _WILDCARD.sub(lambda match: rng.choice(match.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def _process_tags(
    caption: str,
    rng: random.Random,
    shuffle: bool,
    keep_tokens: int,
    tag_dropout_rate: float,
    keep_tokens_separator: str | None,
    separator: str,
    warmup_min: int,
    warmup_steps: int,
    step: int,
) -> str:
    head: list[str] = []
    tail: list[str] = []
    if keep_tokens_separator and keep_tokens_separator in caption:
        head_part, flex_part = caption.split(keep_tokens_separator, 1)
        if keep_tokens_separator in flex_part:
            flex_part, tail_part = flex_part.split(keep_tokens_separator, 1)
            tail = _nonempty_tags(tail_part, separator)
        head = _nonempty_tags(head_part, separator)
        flex = _nonempty_tags(flex_part, separator)
    else:
        # empty tags are kept on this path, as in sd-scripts ("a,,b" has three tags)
        tags = [t.strip() for t in caption.strip().split(separator)]
        head, flex = (tags[:keep_tokens], tags[keep_tokens:]) if keep_tokens > 0 else ([], tags)

    if warmup_steps and step < warmup_steps:
        flex = flex[: math.floor(step * ((len(flex) - warmup_min) / warmup_steps)) + warmup_min]
    if shuffle:
        rng.shuffle(flex)
    if tag_dropout_rate > 0:
        flex = [tag for tag in flex if rng.random() >= tag_dropout_rate]
    return ", ".join(head + flex + tail)


def _nonempty_tags(text: str, separator: str) -> list[str]:
    return [t.strip() for t in text.split(separator) if t.strip()]


def count_tags(captions: list[str]) -> dict[str, int]:
    """Tag -> count over captions, for `ss_tag_frequency` (comma split, stripped, lower-cased)."""
    counts: dict[str, int] = {}
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip().lower()
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return counts


# ---- weighted captions: A1111 attention syntax -------------------------------------------------

ROUND_FACTOR = 1.1  # "(a)" multiplies a's weight by 1.1, "[a]" divides it by 1.1


def parse_weighted_caption(text: str) -> list[tuple[str, float]]:
    """Split A1111-style emphasis into (text, weight) chunks.

    `(a)` ×1.1, `[a]` ÷1.1, `(a:1.3)` ×1.3, nesting multiplies, unclosed brackets apply to the end,
    `\\(` `\\)` `\\[` `\\]` `\\\\` are literals; neighbouring chunks of equal weight are merged.
    Same results (to the last bit) as sd-scripts' `parse_prompt_attention`.
    """
    chunks: list[list] = []  # [text, weight]
    open_round: list[int] = []  # index of the first chunk inside each open "(" / "["
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for chunk in chunks[start:]:
            chunk[1] *= factor

    for kind, value in _attention_tokens(text):
        if kind == "literal":
            chunks.append([value, 1.0])
        elif kind == "(":
            open_round.append(len(chunks))
        elif kind == "[":
            open_square.append(len(chunks))
        elif kind == "weight" and open_round:
            scale_from(open_round.pop(), _weight_value(value, text))
        elif kind == ")" and open_round:
            scale_from(open_round.pop(), ROUND_FACTOR)
        elif kind == "]" and open_square:
            scale_from(open_square.pop(), 1 / ROUND_FACTOR)
        else:
            chunks.append([_token_text(kind, value), 1.0])
    for start in open_round:
        scale_from(start, ROUND_FACTOR)
    for start in open_square:
        scale_from(start, 1 / ROUND_FACTOR)

    merged: list[list] = []
    for chunk in chunks or [["", 1.0]]:
        if merged and merged[-1][1] == chunk[1]:
            merged[-1][0] += chunk[0]
        else:
            merged.append(list(chunk))
    return [(t, w) for t, w in merged]


_ESCAPABLE = "()[]\\"


def _attention_tokens(text: str):
    """Yield (kind, value): literal escapes, brackets, ":<number>)" closers, text runs, lone ":"."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt and nxt in _ESCAPABLE:
                yield "literal", nxt
                i += 2
            else:
                yield "literal", ""  # a lone backslash vanishes
                i += 1
        elif ch in "()[]":
            yield ch, ch
            i += 1
        elif ch == ":":
            end = _weight_end(text, i)
            if end is None:
                yield "text", ":"
                i += 1
            else:
                yield "weight", text[i + 1 : end - 1]
                i = end
        else:
            j = i
            while j < n and text[j] not in "\\()[]:":
                j += 1
            yield "text", text[i:j]
            i = j


def _weight_end(text: str, colon: int) -> int | None:
    """End index (after ")") of ":[+-]?[digits.]+)" starting at `colon`, or None."""
    j = colon + 1
    if j < len(text) and text[j] in "+-":
        j += 1
    start = j
    while j < len(text) and (text[j] == "." or text[j].isdecimal()):  # regex \d: any Unicode digit
        j += 1
    if j == start or j >= len(text) or text[j] != ")":
        return None
    return j + 1


def _token_text(kind: str, value: str) -> str:
    # an unmatched ")" or "]", or a ":1.2)" with no "(" open, stays in the text as written
    return f":{value})" if kind == "weight" else value


def _weight_value(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"weight {value!r} in caption {text!r} is not a number") from None


# ---- 75-token chunks ---------------------------------------------------------------------------


def chunk_token_ids(
    ids: list[int], max_token_length: int, *, bos: int, eos: int, pad: int
) -> list[list[int]]:
    """Cut one caption's token ids into n = max_token_length / 75 windows of 77 tokens.

    `ids` is the tokenizer output with its start and end token, padded or not. It is first brought
    to max_token_length + 2 tokens (truncated keeping the end token, padded with `pad`), then
    window k is [bos] + ids[1 + 75k : 76 + 75k] + [last id]. For tokenizers whose pad is not the
    end token (SD2, SDXL's second encoder), a window whose content does not end in eos/pad gets eos
    as its last token, and a window starting with pad gets eos first (sd-scripts' fix-ups).
    """
    if max_token_length % CHUNK or max_token_length <= 0:
        raise ValueError(f"max_token_length must be 75, 150 or 225 (got {max_token_length})")
    length = max_token_length + 2
    if len(ids) > length:
        ids = list(ids[: length - 1]) + [ids[-1]]
    else:
        ids = list(ids) + [pad] * (length - len(ids))
    if max_token_length == CHUNK:
        return [ids]  # one window: the tokenizer's own output, untouched (as sd-scripts)
    windows = []
    for start in range(1, length - 1, CHUNK):
        window = [ids[0], *ids[start : start + CHUNK], ids[-1]]
        if pad != eos:
            if window[-2] not in (eos, pad):
                window[-1] = eos
            if window[1] == pad:
                window[1] = eos
        windows.append(window)
    return windows


def merge_chunk_states(hidden: torch.Tensor, n: int) -> torch.Tensor:
    """(b*n, 77, d) encoder states of n windows per caption -> (b, 75n + 2, d).

    Keeps the first window's start-token state, states 1..75 of every window, and the last
    window's final state. (sd-scripts has an extra branch for SD2 meant to patch empty windows; it
    compares a token id with the end token's *string*, so it never runs, and we leave it out.)
    """
    import torch

    if n == 1:
        return hidden
    bn, width, dim = hidden.shape
    per_caption = hidden.reshape(bn // n, n * width, dim)
    parts = [per_caption[:, :1]]
    parts += [per_caption[:, k * width + 1 : k * width + 1 + CHUNK] for k in range(n)]
    parts.append(per_caption[:, -1:])
    return torch.cat(parts, dim=1)
