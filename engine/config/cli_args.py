"""sd-scripts command-line text as flat settings: the kohya_ss GUI's `additional_parameters`.

The GUI appends that text to the `accelerate launch train_network.py ...` command it builds, so it
is sd-scripts' own argument syntax: `--name=value`, `--name value`, a bare `--flag` for a switch,
and several values after the options that take a list (`--optimizer_args "a=1" "b=2"`). The text
is split as a shell splits it (quotes removed), then each option becomes the flat key of the same
name, which the one key table (engine/config/flat_keys.py) maps. Which options are switches and
which take lists is read from sd-scripts' argument parser (library/train_util.py,
train_network.py: `action="store_true"`, `nargs="*"`).
"""

from __future__ import annotations

import shlex
from typing import Any

#: sd-scripts options that take several values
LIST_OPTIONS = frozenset(
    {"optimizer_args", "lr_scheduler_args", "network_args", "text_encoder_lr", "base_weights", "base_weights_multiplier"}
)

#: sd-scripts options that are switches (`--name` alone means true)
FLAG_OPTIONS = frozenset(
    {
        "alpha_mask", "async_upload", "bucket_no_upscale", "cache_info", "cache_latents", "cache_latents_to_disk",
        "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk", "color_aug", "cpu_offload_checkpointing",
        "debiased_estimation_loss", "debug_dataset", "deepspeed", "dim_from_weights", "enable_bucket", "enable_wildcard",
        "flip_aug", "fp8_base", "fp8_base_unet", "full_bf16", "full_fp16", "fused_backward_pass", "gradient_checkpointing",
        "highvram", "ip_noise_gamma_random_strength", "log_config", "lowram", "masked_loss", "mem_eff_attn",
        "network_train_text_encoder_only", "network_train_unet_only", "no_half_vae", "no_metadata",
        "noise_offset_random_strength", "output_config", "persistent_data_loader_workers", "random_crop",
        "resume_from_huggingface", "sample_at_first", "save_state", "save_state_on_train_end",
        "save_state_to_huggingface", "scale_v_pred_loss_like_noise_pred", "sdpa", "shuffle_caption", "skip_cache_check",
        "skip_until_initial_step", "torch_compile", "use_8bit_adam", "use_lion_optimizer", "v2", "v_parameterization",
        "weighted_captions", "xformers", "zero_terminal_snr", "no_token_padding", "sdxl", "lowvram",
    }
)


class CommandLineError(ValueError):
    pass


def parse_command_line(text: str) -> dict[str, Any]:
    """`--a=1 --flag --list x y` -> {"a": "1", "flag": True, "list": ["x", "y"]}; a later option of
    the same name replaces an earlier one, as argparse does."""
    try:
        tokens = shlex.split(text or "")
    except ValueError as exc:  # an unclosed quote
        raise CommandLineError(f"cannot be split into arguments ({exc})") from None
    out: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise CommandLineError(f"{token!r} is not an option (options start with --)")
        name, eq, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        index += 1
        values = [inline] if eq else []
        while index < len(tokens) and not tokens[index].startswith("--"):
            values.append(tokens[index])
            index += 1
        if name in FLAG_OPTIONS:
            if values:
                raise CommandLineError(f"--{name} is a switch and takes no value (got {' '.join(values)!r})")
            out[name] = True
        elif name in LIST_OPTIONS:
            out[name] = values
        elif len(values) == 1:
            out[name] = values[0]
        elif not values:
            raise CommandLineError(f"--{name} needs a value")
        else:
            raise CommandLineError(f"--{name} takes one value (got {' '.join(values)!r})")
    return out
