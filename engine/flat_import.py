"""Flat configs from the field: LoRA_Easy_Training_Scripts JSON and kohya names.

LETS saved its `ArgStore` as one flat JSON object (`net_dim`, `img_folder`, `use_8bit_adam`, ...), and
its loader also took the kohya_ss GUI's names (`pretrained_model_name_or_path`, `train_data_dir`,
...). The advanced options arrive under sd-scripts' names (`block_dims`, `min_timestep`, ...). This
module maps every such key onto a dotted path of `TrainConfig`, with the value conversions the old
tools implied (LETS `None` meant "off", the GUI's warmup is a percentage, ...). It is a pure
function of the dict: no files, no validation (the caller validates the result once).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

Convert = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _none_to(default: Any) -> Convert:
    """LETS wrote `null` for "not set": the config's neutral value stands for that."""
    return lambda value: default if value is None else value


def _precision(value: Any) -> Any:
    """Mixed precision: the seed tables say bool (true means fp16)."""
    if value is True:
        return "fp16"
    if value is False or value is None:
        return "no"
    return value


def _save_precision(value: Any) -> Any:
    table = {"32": "float", "fp32": "float", "float32": "float", "16": "fp16", "float16": "fp16", "bfloat16": "bf16"}
    text = str(value).lower() if value is not None else "float"
    return table.get(text, text)


def _every_n_epochs(value: Any) -> Any:
    # LETS passed --save_every_n_epochs=999999 for "don't save epochs"
    if value is None or (isinstance(value, (int, float)) and value >= 999999):
        return None
    return value


def _warmup_percent(value: Any) -> Any:
    """The kohya_ss GUI's `lr_warmup` is a percentage of the steps."""
    if value in (None, "", 0):
        return 0.0
    return float(value) / 100.0


def _number_list(value: Any) -> Any:
    """The GUI stores block lists as "1,1,0.5,..." strings."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return [float(p) if any(c in p for c in ".eE") else int(p) for p in parts]
        except ValueError:
            return value  # a preset name like "cosine+0.2": the config validates it
    return value


def _str_or_none(value: Any) -> Any:
    return None if value in ("", None) else value


def _key_value_args(value: Any) -> Any:
    """`optimizer_args` as a dict, or the GUI's "weight_decay=0.1 betas=0.9,0.99" string."""
    if value in (None, "", []):
        return {}
    if isinstance(value, dict):
        return value
    items = value.split() if isinstance(value, str) else list(value)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"optimizer/scheduler argument {item!r} is not key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = raw.strip()
    return out


def _attention_from_gui(value: Any) -> Any:
    """`xformers`: LETS stored a bool (true: memory-efficient attention), the GUI a kernel name.

    torch SDPA is the memory-efficient kernel of today's torch, so LETS' `true` maps to it; only an
    explicit kernel name "xformers" asks for the xformers package.
    """
    if isinstance(value, str) and value.lower() == "xformers":
        return "xformers"
    return "sdpa"


def _gui_network_type(value: Any) -> Any:
    table = {
        "standard": "lora",
        "kohya locon": "locon",
        "lycoris/locon": "locon",
        "locon": "locon",
        "lycoris/loha": "loha",
        "loha": "loha",
        "lycoris/lokr": "lokr",
        "lokr": "lokr",
        "lora": "lora",
    }
    return table.get(str(value).lower(), value)


def _optimizer_name(value: Any) -> Any:
    table = {"dadaptation": "DAdaptAdam", "dadaptadam": "DAdaptAdam", "adafactor": "AdaFactor"}
    return table.get(str(value).lower(), value)


@dataclass(frozen=True)
class Target:
    path: str
    convert: Convert = _same


# One row per flat key: LETS ArgStore names (v1 and the 2023-05 popup), the kohya_ss GUI names LETS
# already imported, and sd-scripts' names of the advanced options.
FLAT_KEYS: dict[str, Target] = {
    # model
    "base_model": Target("model.base_model"),
    "pretrained_model_name_or_path": Target("model.base_model"),
    "v_parameterization": Target("model.v_parameterization"),
    "vae": Target("model.vae", _str_or_none),
    "clip_skip": Target("model.clip_skip", _none_to(1)),
    "max_clip_token_length": Target("model.max_token_length", _none_to(75)),
    "max_token_length": Target("model.max_token_length", _none_to(75)),
    "lowram": Target("model.lowram"),
    "xformers": Target("model.attention", _attention_from_gui),
    "mem_eff_attn": Target("model.attention", lambda v: "mem_eff" if v else "sdpa"),
    # dataset
    "img_folder": Target("dataset.img_folder"),
    "train_data_dir": Target("dataset.img_folder"),
    "reg_img_folder": Target("dataset.reg_img_folder", _str_or_none),
    "reg_data_dir": Target("dataset.reg_img_folder", _str_or_none),
    "prior_loss_weight": Target("dataset.prior_loss_weight", _none_to(1.0)),
    "caption_extension": Target("dataset.caption_extension", _none_to(".caption")),
    "buckets": Target("dataset.enable_bucket"),
    "enable_bucket": Target("dataset.enable_bucket"),
    "min_bucket_resolution": Target("dataset.min_bucket_reso"),
    "min_bucket_reso": Target("dataset.min_bucket_reso"),
    "max_bucket_resolution": Target("dataset.max_bucket_reso"),
    "max_bucket_reso": Target("dataset.max_bucket_reso"),
    "bucket_reso_steps": Target("dataset.bucket_reso_steps", _none_to(64)),
    "bucket_no_upscale": Target("dataset.bucket_no_upscale"),
    "shuffle_captions": Target("dataset.shuffle_caption"),
    "shuffle_caption": Target("dataset.shuffle_caption"),
    "keep_tokens": Target("dataset.keep_tokens", _none_to(0)),
    "caption_dropout_rate": Target("dataset.caption_dropout_rate", _none_to(0.0)),
    "caption_dropout_every_n_epochs": Target("dataset.caption_dropout_every_n_epochs", _none_to(0)),
    "caption_tag_dropout_rate": Target("dataset.caption_tag_dropout_rate", _none_to(0.0)),
    "weighted_captions": Target("dataset.weighted_captions"),
    "flip_aug": Target("dataset.flip_aug"),
    "color_aug": Target("dataset.color_aug"),
    "random_crop": Target("dataset.random_crop"),
    "cache_latents": Target("dataset.cache_latents"),
    "cache_latents_to_disk": Target("dataset.cache_latents_to_disk"),
    "vae_batch_size": Target("dataset.vae_batch_size", _none_to(1)),
    "num_workers": Target("dataset.max_data_loader_n_workers", _none_to(1)),
    "max_data_loader_n_workers": Target("dataset.max_data_loader_n_workers", _none_to(1)),
    "persistent_workers": Target("dataset.persistent_data_loader_workers"),
    "persistent_data_loader_workers": Target("dataset.persistent_data_loader_workers"),
    # network
    "net_dim": Target("network.dim"),
    "network_dim": Target("network.dim"),
    "alpha": Target("network.alpha"),
    "network_alpha": Target("network.alpha"),
    "conv_dim": Target("network.conv_dim", _str_or_none),
    "conv_alpha": Target("network.conv_alpha", _str_or_none),
    "LoRA_type": Target("network.type", _gui_network_type),
    "lora_model_for_resume": Target("network.network_weights", _str_or_none),
    "network_weights": Target("network.network_weights", _str_or_none),
    "dim_from_weights": Target("network.dim_from_weights"),
    "network_dropout": Target("network.dropout", _str_or_none),
    "rank_dropout": Target("network.rank_dropout", _str_or_none),
    "module_dropout": Target("network.module_dropout", _str_or_none),
    "block_dims": Target("network.block_dims", _number_list),
    "block_alphas": Target("network.block_alphas", _number_list),
    "conv_block_dims": Target("network.conv_block_dims", _number_list),
    "conv_block_alphas": Target("network.conv_block_alphas", _number_list),
    "down_lr_weight": Target("network.down_lr_weight", _number_list),
    "mid_lr_weight": Target("network.mid_lr_weight", _number_list),
    "up_lr_weight": Target("network.up_lr_weight", _number_list),
    "block_lr_zero_threshold": Target("network.block_lr_zero_threshold", _none_to(0.0)),
    # optimisation
    "optimizer_type": Target("optim.optimizer", _optimizer_name),
    "optimizer": Target("optim.optimizer", _optimizer_name),
    "optimizer_args": Target("optim.optimizer_args", _key_value_args),
    "learning_rate": Target("optim.learning_rate"),
    "text_encoder_lr": Target("optim.text_encoder_lr", _str_or_none),
    "unet_lr": Target("optim.unet_lr", _str_or_none),
    "scheduler": Target("optim.lr_scheduler"),
    "lr_scheduler": Target("optim.lr_scheduler"),
    "cosine_restarts": Target("optim.lr_scheduler_num_cycles", _none_to(1)),
    "lr_scheduler_num_cycles": Target("optim.lr_scheduler_num_cycles", _none_to(1)),
    "scheduler_power": Target("optim.lr_scheduler_power", _none_to(1.0)),
    "lr_scheduler_power": Target("optim.lr_scheduler_power", _none_to(1.0)),
    "warmup_lr_ratio": Target("optim.lr_warmup_ratio", _none_to(0.0)),
    "lr_warmup": Target("optim.lr_warmup_ratio", _warmup_percent),
    "lr_scheduler_args": Target("optim.lr_scheduler_args", _key_value_args),
    "max_grad_norm": Target("optim.max_grad_norm", _none_to(0.0)),
    "gradient_acc_steps": Target("optim.gradient_accumulation_steps", _none_to(1)),
    "gradient_accumulation_steps": Target("optim.gradient_accumulation_steps", _none_to(1)),
    "gradient_checkpointing": Target("optim.gradient_checkpointing"),
    "mixed_precision": Target("optim.mixed_precision", _precision),
    "full_fp16": Target("optim.full_fp16"),
    "full_bf16": Target("optim.full_bf16"),
    "scale_weight_norms": Target("optim.scale_weight_norms", _str_or_none),
    # training
    "batch_size": Target("training.batch_size"),
    "train_batch_size": Target("training.batch_size"),
    "num_epochs": Target("training.epochs"),
    "epoch": Target("training.epochs"),
    "max_train_epochs": Target("training.max_train_epochs", _str_or_none),
    "max_steps": Target("training.max_steps", _str_or_none),
    "max_train_steps": Target("training.max_steps", _str_or_none),
    "test_seed": Target("training.seed"),
    "seed": Target("training.seed"),
    "noise_offset": Target("training.noise_offset", _none_to(0.0)),
    "noise_offset_type": Target("training.noise_offset_type", lambda v: str(v).lower() if v else "original"),
    "adaptive_noise_scale": Target("training.adaptive_noise_scale", _str_or_none),
    "noise_offset_random_strength": Target("training.noise_offset_random_strength"),
    "multires_noise_iterations": Target("training.multires_noise_iterations", _none_to(0)),
    "multires_noise_discount": Target("training.multires_noise_discount", _none_to(0.3)),
    "ip_noise_gamma": Target("training.ip_noise_gamma", _str_or_none),
    "min_snr_gamma": Target("training.min_snr_gamma", _str_or_none),
    "min_timestep": Target("training.min_timestep", _none_to(0)),
    "max_timestep": Target("training.max_timestep", _none_to(1000)),
    "loss_type": Target("training.loss_type"),
    "huber_c": Target("training.huber_c", _str_or_none),
    "huber_schedule": Target("training.huber_schedule"),
    "v_pred_like_loss": Target("training.v_pred_like_loss", _str_or_none),
    "debiased_estimation_loss": Target("training.debiased_estimation_loss"),
    "zero_terminal_snr": Target("training.zero_terminal_snr"),
    "stop_text_encoder_training": Target("training.stop_text_encoder_training", _none_to(0)),
    # saving
    "output_folder": Target("saving.output_folder"),
    "output_dir": Target("saving.output_folder"),
    "change_output_name": Target("saving.output_name", _str_or_none),
    "output_name": Target("saving.output_name", _str_or_none),
    "save_as": Target("saving.save_model_as"),
    "save_model_as": Target("saving.save_model_as"),
    "save_precision": Target("saving.save_precision", _save_precision),
    "save_every_n_epochs": Target("saving.save_every_n_epochs", _every_n_epochs),
    "save_every_n_steps": Target("saving.save_every_n_steps", _str_or_none),
    "save_last_n_epochs": Target("saving.save_last_n_epochs", _str_or_none),
    "save_last_n_steps": Target("saving.save_last_n_steps", _str_or_none),
    "save_last_n_epochs_state": Target("saving.save_last_n_epochs_state", _str_or_none),
    "save_last_n_steps_state": Target("saving.save_last_n_steps_state", _str_or_none),
    "save_state": Target("saving.save_state"),
    "load_previous_save_state": Target("saving.resume", _str_or_none),
    "resume": Target("saving.resume", _str_or_none),
    "training_comment": Target("saving.training_comment", _str_or_none),
    "no_meta": Target("saving.no_metadata"),
    "no_metadata": Target("saving.no_metadata"),
    # sampling (the 2023-05 popup wrote `sample_every_n_epoch`, a key sd-scripts never had)
    "sample_prompts": Target("sampling.sample_prompts", _str_or_none),
    "sample_sampler": Target("sampling.sample_sampler"),
    "sample_every_n_steps": Target("sampling.sample_every_n_steps", _str_or_none),
    "sample_every_n_epochs": Target("sampling.sample_every_n_epochs", _str_or_none),
    "sample_every_n_epoch": Target("sampling.sample_every_n_epochs", _str_or_none),
    # logging
    "log_dir": Target("logging.log_dir", _str_or_none),
    "logging_dir": Target("logging.log_dir", _str_or_none),
    "log_prefix": Target("logging.log_prefix", _str_or_none),
}

# Keys about the wizard session that wrote the file, not about the training: LETS' own loader
# skipped them too. They are dropped (and reported) on import.
SESSION_KEYS = frozenset(
    {
        "save_json_folder",
        "load_json_path",
        "json_load_skip_list",
        "multi_run_folder",
        "save_json_only",
        "save_json_name",
    }
)

# Options the old tools had that this product does not offer. A file that leaves them at their
# "off" value imports fine; one that turns them on is refused with the reason.
UNSUPPORTED_KEYS: dict[str, str] = {
    "token_warmup_min": "token warm-up is not offered",
    "token_warmup_step": "token warm-up is not offered",
    "face_crop_aug_range": "face-crop augmentation is not offered",
    "dataset_config": "dataset TOML files are not read; point dataset.img_folder at the image folder",
    "lr_scheduler_type": "custom scheduler classes are not offered; pick one of optim.lr_scheduler",
    "huggingface_repo_id": "uploading to a hub is not offered (this product works offline)",
    "huggingface_token": "uploading to a hub is not offered (this product works offline)",
    "huggingface_repo_type": "uploading to a hub is not offered (this product works offline)",
    "huggingface_path_in_repo": "uploading to a hub is not offered (this product works offline)",
    "huggingface_repo_visibility": "uploading to a hub is not offered (this product works offline)",
    "save_state_to_huggingface": "uploading to a hub is not offered (this product works offline)",
    "resume_from_huggingface": "uploading to a hub is not offered (this product works offline)",
    "async_upload": "uploading to a hub is not offered (this product works offline)",
    "wandb_api_key": "only TensorBoard logging is offered (logging.log_dir)",
    "log_tracker_name": "only TensorBoard logging is offered (logging.log_dir)",
    "save_n_epoch_ratio": "use saving.save_every_n_epochs instead",
}

_INACTIVE = (None, False, "", 0, [], {}, "tensorboard")


@dataclass
class FlatImport:
    """The nested dict built from a flat file, and what was dropped on the way (for a notice)."""

    nested: dict[str, dict[str, Any]]
    dropped: list[str]


def is_flat_config(raw: dict[str, Any]) -> bool:
    """True for LETS/kohya flat files: no `version` and no section objects."""
    return "version" not in raw and not any(isinstance(v, dict) and k in _SECTIONS for k, v in raw.items())


_SECTIONS = {"model", "dataset", "network", "optim", "training", "saving", "sampling", "logging"}


def flat_to_nested(raw: dict[str, Any], source: str) -> FlatImport:
    """Map a flat LETS/kohya dict onto the nested layout. Raises ConfigError naming every bad key."""
    nested: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    problems: list[str] = []

    for key, value in raw.items():
        if key in SESSION_KEYS:
            dropped.append(key)
        elif key in UNSUPPORTED_KEYS:
            if value in _INACTIVE:
                dropped.append(key)
            else:
                problems.append(f"{key}={value!r}: {UNSUPPORTED_KEYS[key]}")
        elif key in FLAT_KEYS or key in _SPECIAL_KEYS:
            pass
        else:
            close = difflib.get_close_matches(key, list(FLAT_KEYS) + list(_SPECIAL_KEYS), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")

    if problems:
        from engine.errors import problems_message

        raise ConfigError(problems_message(f"{source} (LETS/kohya flat config)", problems))

    for key, value in raw.items():
        target = FLAT_KEYS.get(key)
        if target is None:
            continue
        section, name = target.path.split(".")
        nested.setdefault(section, {})[name] = target.convert(value)

    _apply_special_keys(raw, nested, source)
    return FlatImport(nested=nested, dropped=dropped)


# Keys whose meaning spreads over several fields, handled by `_apply_special_keys`.
_SPECIAL_KEYS = frozenset(
    {
        "v2",
        "sdxl",
        "use_8bit_adam",
        "use_lion",
        "unet_only",
        "text_only",
        "network_train_unet_only",
        "network_train_text_encoder_only",
        "tag_occurrence_txt_file",
        "sort_tag_occurrence_alphabetically",
        "train_resolution",
        "height_resolution",
        "resolution",
        "lyco",
        "network_args",
        "network_module",
    }
)


def _apply_special_keys(raw: dict[str, Any], nested: dict[str, dict[str, Any]], source: str) -> None:
    model = nested.setdefault("model", {})
    if raw.get("sdxl"):
        model["family"] = "sdxl"
    elif "v2" in raw:
        model["family"] = "sd2" if raw["v2"] else "sd1"

    optim = nested.setdefault("optim", {})
    if "optimizer" not in optim and ("use_8bit_adam" in raw or "use_lion" in raw):
        # LETS v1: two booleans. Its popup's "adamw" button set a wrong key, so use_8bit_adam stayed
        # true; the file shows what sd-scripts actually ran, and that is what we reproduce.
        if raw.get("use_lion"):
            optim["optimizer"] = "Lion"
        elif raw.get("use_8bit_adam"):
            optim["optimizer"] = "AdamW8bit"
        else:
            optim["optimizer"] = "AdamW"

    network = nested.setdefault("network", {})
    unet_only = raw.get("unet_only") or raw.get("network_train_unet_only")
    text_only = raw.get("text_only") or raw.get("network_train_text_encoder_only")
    if unet_only and text_only:
        raise ConfigError(f"{source}: unet_only and text_only are both set; keep at most one")
    if unet_only:
        network["train_on"] = "unet_only"
    elif text_only:
        network["train_on"] = "text_only"

    saving = nested.setdefault("saving", {})
    if "tag_occurrence_txt_file" in raw:
        if not raw["tag_occurrence_txt_file"]:
            saving["tag_file"] = "off"
        elif raw.get("sort_tag_occurrence_alphabetically"):
            saving["tag_file"] = "alphabetical"
        else:
            saving["tag_file"] = "by_count"

    dataset = nested.setdefault("dataset", {})
    width = raw.get("train_resolution", raw.get("resolution"))
    if isinstance(width, str):  # sd-scripts writes "768,512"
        parts = [int(p) for p in width.split(",")]
        width = parts[0] if len(parts) == 1 else parts
    height = raw.get("height_resolution")
    if isinstance(width, list):
        dataset["resolution"] = width
    elif width is not None:
        dataset["resolution"] = width if height in (None, width) else [width, height]

    network_args = raw.get("network_args") or {}
    if isinstance(network_args, dict):
        for key, value in network_args.items():
            if key in ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_lr_zero_threshold"):
                network[key] = value
            elif key in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
                         "down_lr_weight", "mid_lr_weight", "up_lr_weight"):
                network[key] = _number_list(value)
            elif key == "algo":
                network["type"] = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr"}.get(
                    str(value).lower(), value
                )
            else:
                raise ConfigError(f"{source}: network_args key {key!r} is not offered")
    if "conv_dim" in network and network.get("conv_dim") and network.get("type", "lora") == "lora":
        network["type"] = "locon"  # sd-scripts' LoRA with conv_dim *is* LoCon
    module = str(raw.get("network_module") or "")
    if module.endswith("lycoris.kohya") and "type" not in network:
        network["type"] = "locon"

    if "lr_warmup" in raw and isinstance(raw["lr_warmup"], (int, float)) and not math.isfinite(raw["lr_warmup"]):
        raise ConfigError(f"{source}: lr_warmup={raw['lr_warmup']!r} is not a number")

    for section in [k for k, v in nested.items() if not v]:
        del nested[section]
