"""How a value written by an older tool reads as a config value.

LETS, the kohya_ss GUI and sd-scripts wrote the same settings in different spellings: "" or null
for "not set", 0 for "off", numbers as strings, percentages, "key=value" argument strings with or
without shell quotes. Each function here turns one such spelling into the value the config field
takes, or None for "not set" (the field's default, or the source format's default, applies). Pure
functions of one value; the tables in engine/config/flat_keys.py say which key uses which.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Callable
from typing import Any

from engine.config.schema import Optimizer

Convert = Callable[[Any], Any]


def same(value: Any) -> Any:
    return value


def none_to(default: Any) -> Convert:
    """"Not set" means sd-scripts' own default here, which differs from the config's default."""
    return lambda value: default if value is None else value


def zero_off(value: Any) -> Any:
    """The GUI's 0 for an option that is off (its real values are positive)."""
    return None if value in (0, "0", 0.0, "0.0") else value


def lower(value: Any) -> Any:
    """The GUI capitalises some choices ("Multires")."""
    return None if value is None else str(value).lower()


def precision(value: Any) -> Any:
    """Mixed precision: the seed tables say bool (true means fp16)."""
    if value is True:
        return "fp16"
    if value is False or value is None:
        return "no"
    return str(value).lower()


def save_precision(value: Any) -> Any:
    table = {"32": "float", "fp32": "float", "float32": "float", "16": "fp16", "float16": "fp16", "bfloat16": "bf16"}
    text = str(value).lower() if value is not None else "float"
    return table.get(text, text)


def token_length(value: Any) -> Any:
    """The GUI writes "75" as a string; sd-scripts' default (not set) is 75."""
    return 75 if value is None else int(value)


def every_n_epochs(value: Any) -> Any:
    # LETS passed --save_every_n_epochs=999999 for "don't save epochs"; the GUI writes 0
    if isinstance(value, str):
        value = int(value)
    if value is None or value == 0 or value >= 999999:
        return None
    return value


def warmup_percent(value: Any) -> Any:
    """The kohya_ss GUI's `lr_warmup` is a percentage of the steps."""
    return 0.0 if value is None else float(value) / 100.0


def warmup_steps(value: Any) -> Any:
    """sd-scripts' `lr_warmup_steps` is a whole number of steps, or a ratio when it is a float
    below 1 (train_util.get_scheduler_fix): the ratio goes to optim.lr_warmup_ratio instead (see
    `flat_import`), so here it is only a count."""
    if value is None or value == "":
        return None
    number = float(value)
    if not number.is_integer():
        raise ValueError("a warmup step count is a whole number (a ratio is a number below 1)")
    return int(number)


def number_list(value: Any) -> Any:
    """The GUI stores block lists as "1,1,0.5,..." strings."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return [float(p) if any(c in p for c in ".eE") else int(p) for p in parts]
        except ValueError:
            return value  # a preset name like "cosine+0.2": the config validates it
    return value


def key_value_args(value: Any) -> dict[str, Any]:
    """Optimizer/scheduler/network arguments: a dict, a list of "key=value", or one string of them.

    A string is split the way a shell splits a command line (sd-scripts received these through
    its command line, and the GUI wrote them there as typed), so `"decouple=True" "betas=0.9,0.99"`
    and `betas='0.95,0.98'` lose their quotes as they did there.
    """
    if value is None or value == [] or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            items: list[Any] = shlex.split(value)
        except ValueError as exc:  # an unclosed quote
            raise ValueError(f"cannot be split into key=value items ({exc})") from None
    else:
        # each item is one argument already (a TOML array, sd-scripts' nargs list): only quotes
        # around a whole item are removed
        items = [_unquote(item) if isinstance(item, str) else item for item in value]
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"{item!r} is not key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = raw.strip()
    return out


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def literal_args(value: Any) -> dict[str, Any]:
    """`key_value_args` whose values are read as Python literals, as sd-scripts reads scheduler
    arguments (`ast.literal_eval` in train_util.get_scheduler_fix); a value that is not one stays text."""
    out = key_value_args(value)
    for key, raw in out.items():
        if isinstance(raw, str):
            try:
                out[key] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                pass
    return out


def scalar_or_list(value: Any) -> Any:
    """`number_list`, but one number stays a number (the middle block's one LR weight)."""
    listed = number_list(value)
    return listed[0] if isinstance(listed, list) and len(listed) == 1 else listed


def prompt_lines(value: Any) -> Any:
    """The kohya_ss GUI's sample prompts box holds the prompts themselves, one a line (it writes
    the text to `<output_dir>/sample/prompt.txt` before training): kept as the list of lines."""
    if value is None:
        return None
    lines = [line for line in str(value).splitlines() if line.strip()]
    return lines or None


def gui_network_type(value: Any) -> Any:
    table = {
        "standard": "lora",
        "lora": "lora",
        "kohya locon": "locon",
        "lycoris/locon": "locon",
        "locon": "locon",
        "lycoris/loha": "loha",
        "loha": "loha",
        "lycoris/lokr": "lokr",
        "lokr": "lokr",
    }
    return table.get(str(value).lower(), value)


_OPTIMIZER_NAMES = {
    **{member.value.lower(): member.value for member in Optimizer},
    "dadaptation": Optimizer.DADAPT_ADAM.value,  # sd-scripts' name for it in the LETS era
    "adamw8bit": Optimizer.ADAMW8BIT.value,
}


def optimizer_name(value: Any) -> Any:
    """sd-scripts compares optimizer names case-insensitively (`AdamW8Bit` is common)."""
    return _OPTIMIZER_NAMES.get(str(value).lower(), value)


def side(value: Any) -> int | list[int]:
    """One resolution value: 512, "512", "768,512" or [768, 512]."""
    if isinstance(value, str):
        parts = [int(p) for p in value.replace(" ", "").split(",")]
        return parts[0] if len(parts) == 1 else parts
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def as_float(value: Any) -> float | None:
    """A learning rate as the GUI writes it ("", "0", 1e-4, "5e-5"); None when not set."""
    if value is None or value == "":
        return None
    if isinstance(value, list):  # sd-scripts' text_encoder_lr takes one rate per text encoder
        rates = {float(v) for v in value}
        if len(rates) > 1:
            raise ValueError("one learning rate per text encoder is not offered; give one rate for both")
        return rates.pop() if rates else None
    return float(value)
