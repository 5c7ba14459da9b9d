"""Flat keys whose meaning spreads over several config fields, or depends on the tool that wrote them.

Each function reads the raw flat dict (after the plain keys were mapped) and fills the nested
config sections, adding notes for the user and problems that stop the import. Which tool wrote
the file decides some meanings:

* learning rates: in a kohya_ss GUI file 0 means "not given", and a part rate given alone means
  only that part trains (kohya_gui/lora_gui.py, `resolve_network_train_flags`); for sd-scripts a
  part's rate is its own or learning_rate, and a part whose rate is 0 is not trained
  (networks/lora.py `prepare_optimizer_params` skips groups with lr 0).
* epoch and step limits: engine/config/sources.py `LIMIT_RULE`.
* Adafactor without `relative_step=False`: sd-scripts turns Adafactor's relative step on and replaces
  the schedule with Adafactor's own (library/train_util.py `get_optimizer`).
"""

from __future__ import annotations

from typing import Any

from engine.config.flat_values import as_float, side
from engine.config.sources import (
    LIMIT_RULE,
    SD_SCRIPTS_DEFAULT_STEPS,
    SD_SCRIPTS_LEARNING_RATE,
    LimitRule,
    SourceFormat,
)
from engine.problems import Problem

Nested = dict[str, dict[str, Any]]


def read_family_and_attention(raw: dict[str, Any], fmt: SourceFormat, nested: Nested, problems: list[Problem]) -> None:
    model = nested.setdefault("model", {})
    # v2=false is LETS' default answer, not a statement about the weights: the family stays "auto"
    # (read from the checkpoint) unless a file says SD2 or SDXL.
    if raw.get("sdxl") and raw.get("v2"):
        problems.append(Problem("v2", "v2 and sdxl are both true", "keep the one that matches the base model", True))
    elif raw.get("sdxl"):
        model["family"] = "sdxl"
    elif raw.get("v2"):
        model["family"] = "sd2"

    if raw.get("mem_eff_attn"):  # sd-scripts: mem_eff_attn wins over xformers
        model["attention"] = "mem_eff"
    elif raw.get("sdpa"):
        model["attention"] = "sdpa"
    elif "xformers" in raw:
        # LETS' JSON stored a bool (true: memory-efficient attention), the GUI a kernel name. Torch
        # SDPA is today's memory-efficient kernel, so there only the explicit name "xformers" asks
        # for xformers; for sd-scripts (its TOML, LETS' TOML) the switch is xformers itself.
        value = raw["xformers"]
        named = isinstance(value, str) and value.lower() == "xformers"
        model["attention"] = "xformers" if named or (value is True and fmt != SourceFormat.LETS_JSON) else "sdpa"


def read_optimizer_flags(raw: dict[str, Any], optim: dict[str, Any], notes: list[str]) -> None:
    if "optimizer" in optim or not any(k in raw for k in ("use_8bit_adam", "use_lion", "use_lion_optimizer", "8bit_adam")):
        return
    if raw.get("use_lion") or raw.get("use_lion_optimizer"):
        optim["optimizer"] = "Lion"
    elif "8bit_adam" in raw and not raw["8bit_adam"]:
        # LETS' popup stored the "adamw" button as `8bit_adam: false`, a key sd-scripts never read,
        # so that run used AdamW8bit by mistake. We train what the user chose.
        optim["optimizer"] = "AdamW"
        notes.append("8bit_adam=false (LETS' AdamW button) is read as AdamW; LETS itself ran AdamW8bit by mistake")
    elif raw.get("use_8bit_adam"):
        optim["optimizer"] = "AdamW8bit"
    else:
        optim["optimizer"] = "AdamW"


def read_rates(raw: dict[str, Any], fmt: SourceFormat, nested: Nested, notes: list[str], problems: list[Problem]) -> None:
    """learning_rate, unet_lr, text_encoder_lr and the train-only switches -> optim rates and network.train_on."""
    try:
        base, unet, text = (as_float(raw.get(k)) for k in ("learning_rate", "unet_lr", "text_encoder_lr"))
    except (TypeError, ValueError) as exc:
        problems.append(Problem("learning_rate", f"a learning rate cannot be read ({exc})", "write a number"))
        return
    unet_only = bool(raw.get("unet_only") or raw.get("network_train_unet_only"))
    text_only = bool(raw.get("text_only") or raw.get("network_train_text_encoder_only"))
    if fmt == SourceFormat.KOHYA_GUI:
        base, unet, text = (rate or None for rate in (base, unet, text))  # the GUI's 0 is "not given"
        if base is None and unet is None and text is None:
            problems.append(Problem("learning_rate", "the file gives no learning rate (all are 0)", "set learning_rate"))
            return
        unet_only |= unet is not None and text is None
        text_only |= text is not None and unet is None
    else:
        if base is None and fmt != SourceFormat.LETS_JSON:
            base = SD_SCRIPTS_LEARNING_RATE
        unet_rate = unet if unet is not None else base
        text_rate = text if text is not None else base
        text_only |= unet_rate == 0  # sd-scripts skips parameter groups whose rate is 0
        unet_only |= text_rate == 0
        unet, text = (None if rate == 0 else rate for rate in (unet, text))
    if unet_only and text_only:
        problems.append(Problem("learning_rate", "neither the U-Net nor the text encoder would train", "give one part a rate above 0"))
        return
    network = nested.setdefault("network", {})
    if unet_only:
        network["train_on"] = "unet_only"
    elif text_only:
        network["train_on"] = "text_only"
    optim = nested.setdefault("optim", {})
    if base is not None and base > 0:
        optim["learning_rate"] = base
    elif base is not None or fmt == SourceFormat.KOHYA_GUI:
        own = text if text_only else unet if unet is not None else text
        if own is not None:
            optim["learning_rate"] = own
            notes.append(f"learning_rate is 0: the parts train at their own rates; learning_rate is set to {own:g}")
    if unet is not None:
        optim["unet_lr"] = unet
    if text is not None:
        optim["text_encoder_lr"] = text


def read_text_encoder_cache(raw: dict[str, Any], nested: Nested, notes: list[str], problems: list[Problem]) -> None:
    """sd-scripts' cache_text_encoder_outputs (the GUI: sdxl_cache_text_encoder_outputs, passed for
    SDXL only). The engine caches them by itself whenever only the U-Net trains and captions stay
    the same (engine/text/cache.py), so the option needs no field; sd-scripts refuses it unless
    only the U-Net trains, and so does the import."""
    key = next((k for k in ("cache_text_encoder_outputs", "sdxl_cache_text_encoder_outputs") if raw.get(k)), None)
    if key is None:
        return
    if key == "sdxl_cache_text_encoder_outputs" and not raw.get("sdxl"):
        return  # the GUI passes it for SDXL only
    if nested.get("network", {}).get("train_on") != "unet_only":
        problems.append(
            Problem(key, "caches the text encoders' outputs, so they cannot train (sd-scripts refuses it too)",
                    "train the U-Net only (text_encoder_lr 0 in the GUI, network_train_unet_only), or turn it off", True)
        )
        return
    notes.append(f"{key}: text-encoder outputs are cached whenever only the U-Net trains and the captions do not change per use")


def read_warmup(raw: dict[str, Any], fmt: SourceFormat, optim: dict[str, Any], notes: list[str], problems: list[Problem]) -> None:
    """sd-scripts' lr_warmup_steps: a whole number of steps, or a float below 1 as a share of the
    steps (train_util.get_scheduler_fix). In a GUI file it overrides the percentage `lr_warmup`."""
    value = raw.get("lr_warmup_steps")
    if value is None or value == "":
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(Problem("lr_warmup_steps", "is not a number", "write a step count, or a share below 1", value))
        return
    if fmt == SourceFormat.KOHYA_GUI:
        if number <= 0:
            return  # the GUI's 0: the percentage applies
        if optim.pop("lr_warmup_ratio", 0):
            notes.append("lr_warmup_steps overrides lr_warmup, as in the kohya_ss GUI")
        optim["lr_warmup_steps"] = int(number)
        return
    is_ratio = isinstance(value, float) or (isinstance(value, str) and not value.strip().lstrip("-").isdigit())
    if is_ratio and number < 1:
        optim["lr_warmup_ratio"] = number
    elif number.is_integer():
        optim["lr_warmup_steps"] = int(number)
    else:
        problems.append(Problem("lr_warmup_steps", "is neither a whole number of steps nor a share below 1", "fix it", value))


def read_limits(raw: dict[str, Any], fmt: SourceFormat, training: dict[str, Any], notes: list[str], problems: list[Problem]) -> None:
    """The epoch and step limits, kept as the file's tool meant them: the config keeps only the one
    that tool trains (training.max_steps wins over training.epochs in a config)."""
    names = {"epochs": ("num_epochs", "epoch", "max_train_epochs"), "steps": ("max_steps", "max_train_steps")}
    if fmt != SourceFormat.KOHYA_GUI and fmt != SourceFormat.LETS_JSON:
        if raw.get("epoch") not in (None, "", 0):
            notes.append(f"epoch = {raw['epoch']} is not an sd-scripts option (it trains max_train_epochs or max_train_steps): ignored")
        names["epochs"] = ("num_epochs", "max_train_epochs")
    values: dict[str, tuple[str, int]] = {}
    for kind, keys in names.items():
        for key in reversed(keys):  # max_train_epochs before the GUI's plain `epoch`
            try:
                number = _whole(raw.get(key))
            except ValueError:
                problems.append(Problem(key, "is not a whole number", "write a count", raw.get(key)))
                return
            if number:
                values.setdefault(kind, (key, number))
    epochs, steps = values.get("epochs"), values.get("steps")
    # the GUI's plain `epoch` only sized its own step estimate: a step count it passed wins over it
    if epochs and steps and LIMIT_RULE[fmt] == LimitRule.EPOCHS_WIN and epochs[0] != "epoch":
        notes.append(f"{steps[0]} = {steps[1]} is overridden by {epochs[0]} = {epochs[1]}, as in sd-scripts: the run trains epochs")
        steps = None
    if epochs:
        training["epochs"] = epochs[1]
    if steps:
        training["max_steps"] = steps[1]
    elif not epochs and fmt in (SourceFormat.SD_SCRIPTS_TOML, SourceFormat.LETS_TOML):
        training["max_steps"] = SD_SCRIPTS_DEFAULT_STEPS
        notes.append(f"neither max_train_epochs nor max_train_steps is set: sd-scripts' default, {SD_SCRIPTS_DEFAULT_STEPS} steps")


def _whole(value: Any) -> int | None:
    if value is None or value == "":
        return None
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def read_adafactor(optim: dict[str, Any], fmt: SourceFormat, notes: list[str]) -> None:
    """sd-scripts turns Adafactor's relative step on unless the file says relative_step=False (or
    warmup_init=True, which needs it), and then trains with Adafactor's own schedule."""
    if fmt == SourceFormat.LETS_JSON or optim.get("optimizer") != "AdaFactor":
        return
    args = optim.setdefault("optimizer_args", {})
    # transformers' Adafactor scales its steps by each parameter's size unless told otherwise;
    # lora-wizard's own default is off, so an imported file states sd-scripts' value
    args.setdefault("scale_parameter", "True")
    relative = str(args.get("relative_step", "True")).strip().lower() == "true"
    warmup_init = str(args.get("warmup_init", "False")).strip().lower() == "true"
    if relative or warmup_init:
        args["relative_step"] = "True"
        if optim.get("lr_scheduler") not in (None, "adafactor"):
            notes.append(
                f"Adafactor with its relative step (sd-scripts' default) sets its own learning rate: the "
                f"{optim['lr_scheduler']} schedule is replaced by the adafactor schedule, as sd-scripts does"
            )
        optim["lr_scheduler"] = "adafactor"
        optim.pop("lr_warmup_ratio", None)


def read_tag_file(raw: dict[str, Any], saving: dict[str, Any]) -> None:
    if "tag_occurrence_txt_file" in raw:
        if not raw["tag_occurrence_txt_file"]:
            saving["tag_file"] = "off"
        elif raw.get("sort_tag_occurrence_alphabetically"):
            saving["tag_file"] = "alphabetical"
        else:
            saving["tag_file"] = "by_count"


def read_resolution(raw: dict[str, Any], dataset: dict[str, Any], problems: list[Problem]) -> None:
    key = next((k for k in ("train_resolution", "resolution", "max_resolution") if raw.get(k) is not None), None)
    if key is None:
        return
    try:
        width = side(raw[key])
    except ValueError:
        problems.append(Problem(key, "is not a resolution", 'write 512 or "768,512" (width,height)', raw[key]))
        return
    height = raw.get("height_resolution")
    if isinstance(width, int) and height not in (None, width):
        width = [width, height]
    if isinstance(width, list) and len(width) == 2 and width[0] == width[1]:
        width = width[0]  # "512,512" is the square 512
    dataset["resolution"] = width


def drop_unused_state_keeping(nested: Nested, notes: list[str]) -> None:
    """sd-scripts keeps the last N states only when it saves states at all: without save_state the
    keep-last settings do nothing (train_network.py removes old states inside `save_state`)."""
    saving = nested.get("saving", {})
    if saving.get("save_state"):
        return
    for name in ("save_last_n_epochs_state", "save_last_n_steps_state"):
        if saving.pop(name, None) is not None:
            notes.append(f"{name} is ignored: save_state is off, so no state is saved (as in sd-scripts)")


def drop_inactive_noise(raw: dict[str, Any], nested: Nested, dropped: list[str]) -> None:
    """Drop values of options the file's own settings switch off (the GUI writes them anyway)."""
    training = nested.get("training", {})

    def drop(*names: str) -> None:
        for name in names:
            if name in training:
                del training[name]
                dropped.append(name)

    if "noise_offset_type" in raw:  # the GUI's switch picks which noise values the run used
        if training.get("noise_offset_type") == "multires":
            drop("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
        else:
            drop("multires_noise_iterations", "multires_noise_discount")
    elif training.get("multires_noise_iterations"):
        training["noise_offset_type"] = "multires"  # LETS and sd-scripts had no switch
    if not training.get("multires_noise_iterations"):
        drop("multires_noise_discount")
    if training.get("loss_type", "l2") == "l2":
        drop("huber_c")  # the GUI writes its 0.1 default whatever the loss
    if not training.get("ip_noise_gamma"):
        drop("ip_noise_gamma_random_strength")
