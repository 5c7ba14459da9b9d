"""What the kohya_ss GUI meant by the fields it saves, where that is not what the names say.

The GUI (bmaltais/kohya_ss, kohya_gui/lora_gui.py `train_model` and class_sample_images.py) turns
its saved fields into an sd-scripts run; a few of them it reads in its own way, and this module
rewrites those into the plain option values before the one key table maps them:

* `additional_parameters`: sd-scripts command-line text appended to the command, so each option
  in it overrides the field of the same name (engine/config/cli_args.py reads it).
* `sample_prompts`: the prompts themselves (the GUI writes them to a prompt file before training);
  with sampling off the box is not used at all.
* `stop_text_encoder_training`: the GUI ignores it ("not yet supported").
* a warm-up with the constant schedule: the GUI dropped it ("Can't use LR warmup with LR
  Scheduler constant... ignoring"); sd-scripts itself refuses the pair.
* an empty `lr_scheduler_num_cycles`: the GUI passes the epoch count.
"""

from __future__ import annotations

from typing import Any

from engine.config.cli_args import CommandLineError, parse_command_line
from engine.config.flat_values import prompt_lines
from engine.problems import Problem


def gui_meanings(raw: dict[str, Any], notes: list[str], dropped: list[str], problems: list[Problem]) -> dict[str, Any]:
    """`raw` (with "" already read as None) with the GUI's own readings applied."""
    out = dict(raw)
    text = out.pop("additional_parameters", None)
    if text:
        try:
            extra = parse_command_line(str(text))
        except CommandLineError as exc:
            problems.append(Problem("additional_parameters", str(exc), "write sd-scripts options like --max_grad_norm=0", text))
            extra = {}
        if extra:
            out.update(extra)
            notes.append("additional_parameters read as: " + ", ".join(f"{k}={_show(v)}" for k, v in extra.items()))

    sampling = any(_number(out.get(k)) for k in ("sample_every_n_epochs", "sample_every_n_steps"))
    if out.get("sample_prompts") is not None:
        if sampling:
            out["sample_prompts"] = prompt_lines(out["sample_prompts"])
        else:
            del out["sample_prompts"]
            dropped.append("sample_prompts")  # the box is unused while sampling is off

    for key in ("stop_text_encoder_training", "stop_text_encoder_training_pct"):
        if _number(out.get(key)):
            notes.append(f"{key} = {out[key]} is ignored, as the kohya_ss GUI ignores it")
            out[key] = 0

    if str(out.get("lr_scheduler") or "").lower() == "constant" and _number(out.get("lr_warmup")):
        notes.append(f"lr_warmup = {out['lr_warmup']}% is ignored: the constant schedule has no warm-up (the GUI dropped it too)")
        out["lr_warmup"] = 0

    if out.get("lr_scheduler_num_cycles") is None and out.get("lr_scheduler") == "cosine_with_restarts" and out.get("epoch"):
        out["lr_scheduler_num_cycles"] = out["epoch"]
        notes.append(f"lr_scheduler_num_cycles is empty: the GUI restarts the cosine once per epoch ({out['epoch']} cycles)")
    return out


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 1.0  # not a number: treated as set, and the config's check says what is wrong


def _show(value: Any) -> str:
    if value is True:
        return "on"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)
