"""Sample prompts: the prompt file sd-scripts reads, and when during a run to sample.

A prompt file is sd-scripts' text format, one prompt a line; blank lines and `#` lines are skipped:

    # my character, two views
    mychar, red dress, standing --n lowres, bad hands --w 512 --h 768 --s 28 --l 7 --d 42
    mychar, sitting --ss euler_a

Options (sd-scripts `line_to_prompt_dict`): `--n` negative prompt, `--w`/`--h` size (multiples of 8),
`--s` steps (1-1000, default 30), `--l` guidance scale (default 7.5), `--d` seed (default: the
training seed + the prompt's index, so every sampling shows the same noise and the images of two
epochs compare), `--ss` sampler for this prompt. A size left out is the training resolution (sd-scripts
uses 512x512, too small for SDXL). Unlike sd-scripts, an option we do not know, or a value it cannot
use, is an error naming the file and line, not a silently ignored or rounded value.

Pure Python: preflight parses the file before any run starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import Sampler, SamplingConfig
from engine.errors import ConfigError

DEFAULT_STEPS = 30  # sd-scripts' defaults for a prompt without --s / --l
DEFAULT_SCALE = 7.5
MAX_STEPS = 1000


@dataclass(frozen=True, slots=True)
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int | None = None  # None: the training resolution
    height: int | None = None
    steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    seed: int | None = None  # None: the training seed + the prompt's index
    sampler: Sampler | None = None  # None: sampling.sample_sampler


# ---------------------------------------------------------------------------------------- prompt file


class BadValue(ValueError):
    """A prompt option's value that parses but cannot be used; the message says what to write."""


def _size(text: str) -> int:
    value = int(text)
    if value < 64 or value % 8:
        below = max(64, value - value % 8)
        raise BadValue(f"must be a multiple of 8 and at least 64, e.g. {below} or {below + 8}")
    return value


def _steps(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_STEPS:
        raise BadValue(f"must be between 1 and {MAX_STEPS}")
    return value


def _scale(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise BadValue("must be a number of 0 or more (7.5 is usual; 1 or less turns guidance off)")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise BadValue(f"must be a whole number from 0 to {2**63 - 1}")
    return value


def _sampler(text: str) -> Sampler:
    try:
        return Sampler(text.lower())
    except ValueError:
        raise BadValue(f"must be one of {', '.join(s.value for s in Sampler)}") from None


def _text(text: str) -> str:
    return text


#: option letter -> (SamplePrompt field, parser); the parser raises BadValue with the fix
PROMPT_OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    "n": ("negative", _text),
    "w": ("width", _size),
    "h": ("height", _size),
    "s": ("steps", _steps),
    "l": ("scale", _scale),
    "d": ("seed", _seed),
    "ss": ("sampler", _sampler),
}


def parse_prompt_line(line: str, where: str) -> SamplePrompt:
    """One line `prompt --x value --y value`; `where` ("file, line N") prefixes every error."""
    # sd-scripts splits on " --": a prompt cannot hold " --" itself, and neither can a negative prompt
    text, *options = line.strip().split(" --")
    text = text.strip()
    if not text or text.startswith("--"):
        raise ConfigError(f"{where}: the line has no prompt before its options; write the prompt first")
    values: dict[str, object] = {}
    for option in options:
        letter, _, raw = option.strip().partition(" ")
        letter, raw = letter.lower(), raw.strip()
        if letter not in PROMPT_OPTIONS:
            known = " ".join(f"--{k}" for k in PROMPT_OPTIONS)
            raise ConfigError(f"{where}: unknown option --{letter}; the options are {known}")
        field, parse = PROMPT_OPTIONS[letter]
        if field in values:
            raise ConfigError(f"{where}: --{letter} is given twice; keep one")
        if not raw:
            raise ConfigError(f"{where}: --{letter} needs a value")
        try:
            values[field] = parse(raw)
        except BadValue as exc:
            raise ConfigError(f"{where}: --{letter} {raw}: {exc}") from None
        except ValueError:  # int() or float() of something else
            raise ConfigError(f"{where}: --{letter} {raw}: is not a number") from None
    return SamplePrompt(prompt=text, **values)  # type: ignore[arg-type]


def parse_prompt_file(path: Path | list[str]) -> list[SamplePrompt]:
    """The prompts of a sd-scripts-style .txt prompt file, or of the prompt lines a config holds
    itself (sampling.sample_prompts as a list, as the kohya_ss GUI keeps them); any problem is a
    ConfigError naming the file (or the list) and the line. Call it before training starts, so a
    typo does not surface hours in."""
    if isinstance(path, list):
        lines, where = [str(line) for line in path], "sampling.sample_prompts"
    else:
        path = Path(path)
        where = str(path)
        if path.suffix.lower() in (".toml", ".json"):
            raise ConfigError(
                f"sampling.sample_prompts={path}: only the .txt format (one prompt a line) is read; "
                "write the prompts one a line in a .txt file"
            )
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise ConfigError(f"sampling.sample_prompts={path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"sampling.sample_prompts={path}: cannot be read as UTF-8 text ({exc})") from None
    prompts = [
        parse_prompt_line(line, f"{where}, line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not prompts:
        raise ConfigError(f"sampling.sample_prompts={where} holds no prompts (only blank or # lines)")
    return prompts


# ----------------------------------------------------------------------------------------- when


def should_sample(sampling: SamplingConfig, epoch: int, step: int, epoch_end: bool) -> bool:
    """sd-scripts' rule: with sample_every_n_epochs, at the end of every Nth epoch (and never by
    steps); otherwise every Nth step, but not at an epoch's end (the step check ran there already).
    Never before the first step."""
    if sampling.sample_prompts is None or step <= 0:
        return False
    if sampling.sample_every_n_epochs:
        return epoch_end and epoch % sampling.sample_every_n_epochs == 0
    if sampling.sample_every_n_steps:
        return not epoch_end and step % sampling.sample_every_n_steps == 0
    return False


def sample_tag(output_name: str | None, epoch: int, step: int, epoch_end: bool) -> str:
    """sd-scripts' sample file prefix: `<name>_e000002` after epoch 2, `<name>_000100` at step 100."""
    return f"{output_name or 'last'}_" + (f"e{epoch:06d}" if epoch_end else f"{step:06d}")
