"""Which tool wrote a file, and what that tool meant by the settings a file leaves out.

The same option names mean slightly different things depending on the tool that wrote them: a
setting missing from a kohya_ss GUI file or an sd-scripts TOML trains with sd-scripts' default
(`argparse` defaults in kohya-ss/sd-scripts library/train_util.py and train_network.py), a setting
missing from a LETS JSON file with LETS' default (this config's own defaults, which follow LETS).
When a file gives both an epoch count and a step count, sd-scripts trains the epochs
(`max_train_epochs` "overrides max_train_steps", train_network.py) and LETS the steps (its popup:
"if you set max steps this value is ignored"). Pure data and small pure functions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class SourceFormat(StrEnum):
    LETS_JSON = "LoRA_Easy_Training_Scripts JSON"
    KOHYA_GUI = "kohya_ss GUI JSON"
    SD_SCRIPTS_TOML = "sd-scripts TOML"
    LETS_TOML = "LoRA_Easy_Training_Scripts TOML"


class LimitRule(StrEnum):
    """Which of an epoch count and a step count a tool trains when a file gives both."""

    EPOCHS_WIN = "epochs"  # sd-scripts: max_train_epochs overrides max_train_steps
    STEPS_WIN = "steps"  # LETS: max_steps overrides num_epochs


LIMIT_RULE: dict[SourceFormat, LimitRule] = {
    SourceFormat.LETS_JSON: LimitRule.STEPS_WIN,
    SourceFormat.KOHYA_GUI: LimitRule.EPOCHS_WIN,
    SourceFormat.SD_SCRIPTS_TOML: LimitRule.EPOCHS_WIN,
    SourceFormat.LETS_TOML: LimitRule.EPOCHS_WIN,  # LETS' TOML hands its settings to sd-scripts
}

#: sd-scripts trains this many steps when a file sets neither epochs nor steps
SD_SCRIPTS_DEFAULT_STEPS = 1600

#: keys only the kohya_ss GUI writes: one of them makes a flat JSON file a GUI file
GUI_MARKERS = frozenset(
    {
        "LoRA_type", "max_resolution", "lr_warmup", "additional_parameters", "model_list", "epoch",
        "stop_text_encoder_training_pct", "num_cpu_threads_per_process", "sdxl_no_half_vae", "LyCORIS_preset",
        "sdxl_cache_text_encoder_outputs", "save_as_bool",
    }
)

# sd-scripts' argparse defaults where they differ from this config's defaults, by config field.
# resolution has none (sd-scripts refuses to train without one); seed has none either (sd-scripts
# draws a random seed; lora-wizard keeps its fixed default so a run can be repeated, and says so).
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "model.clip_skip": 1,
    "model.max_token_length": 75,
    "dataset.caption_extension": ".caption",
    "dataset.enable_bucket": False,
    "dataset.min_bucket_reso": 256,
    "dataset.max_bucket_reso": 1024,
    "dataset.cache_latents": False,
    "dataset.max_data_loader_n_workers": 8,
    "dataset.persistent_data_loader_workers": False,
    "network.dim": 4,  # networks.lora's default rank when network_dim is not given
    "network.alpha": 1.0,
    "optim.optimizer": "AdamW",
    "optim.lr_scheduler": "constant",
    "optim.mixed_precision": "no",
    "saving.save_precision": "float",
}

#: sd-scripts' learning rate when a file gives none
SD_SCRIPTS_LEARNING_RATE = 2e-6

FORMAT_DEFAULTS: dict[SourceFormat, dict[str, Any]] = {
    SourceFormat.LETS_JSON: {},
    SourceFormat.KOHYA_GUI: SD_SCRIPTS_DEFAULTS,
    SourceFormat.SD_SCRIPTS_TOML: SD_SCRIPTS_DEFAULTS,
    SourceFormat.LETS_TOML: SD_SCRIPTS_DEFAULTS,
}


def json_format(raw: dict[str, Any]) -> SourceFormat:
    """A flat JSON file is the GUI's when it holds a key only the GUI writes, else LETS'."""
    return SourceFormat.KOHYA_GUI if GUI_MARKERS & raw.keys() else SourceFormat.LETS_JSON


def bucket_bounds_default(resolution: int | list[int] | tuple[int, int] | None) -> tuple[int, int]:
    """sd-scripts' bucket bounds (256 and 1024) widened to hold the file's resolution: sd-scripts
    refuses a resolution outside them, and a file that left them out meant the default buckets."""
    low, high = SD_SCRIPTS_DEFAULTS["dataset.min_bucket_reso"], SD_SCRIPTS_DEFAULTS["dataset.max_bucket_reso"]
    if resolution is None:
        return low, high
    sides = [resolution, resolution] if isinstance(resolution, int) else list(resolution)
    return min(low, *sides), max(high, *sides)
