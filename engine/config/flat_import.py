"""Flat configs from the field: LoRA_Easy_Training_Scripts JSON and kohya names.

LETS saved its `ArgStore` as one flat JSON object (`net_dim`, `img_folder`, `use_8bit_adam`, ...), and
its loader also took the kohya_ss GUI's names (`pretrained_model_name_or_path`, `train_data_dir`,
`max_resolution`, ...). The advanced options arrive under sd-scripts' names (`block_dims`,
`min_timestep`, ...). This module maps every such key onto a dotted path of `TrainConfig`, with the
value conversions the old tools implied. It is a pure function of the dict: no files, no validation
(the caller validates the result once).

Conventions of those files that the mapping follows:
* LETS wrote `null` and the GUI writes `""` for "not set": such a key is left out, so the config's
  default applies (a few keys map "not set" to sd-scripts' own default instead, see `_none_to`).
* The GUI writes `0` for "off" in options whose real values are positive (`min_snr_gamma`,
  `save_every_n_steps`, ...): `_zero_off` reads that as "not set".
* The GUI keeps values of widgets it does not use (`conv_dim` with a plain LoRA, `huber_c` with the
  L2 loss, `multires_noise_discount` with the original noise offset). Those are dropped and listed,
  because the run the GUI launched did not use them either.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.config.schema import SECTIONS, Optimizer
from engine.errors import ConfigError, problems_message

Convert = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _none_to(default: Any) -> Convert:
    """"Not set" means sd-scripts' own default here, which differs from the config's default."""
    return lambda value: default if value is None else value


def _zero_off(value: Any) -> Any:
    """The GUI's 0 for an option that is off (its real values are positive)."""
    return None if value in (0, "0") else value


def _lower(value: Any) -> Any:
    """The GUI capitalises some choices ("Multires")."""
    return None if value is None else str(value).lower()


def _precision(value: Any) -> Any:
    """Mixed precision: the seed tables say bool (true means fp16)."""
    if value is True:
        return "fp16"
    if value is False or value is None:
        return "no"
    return str(value).lower()


def _save_precision(value: Any) -> Any:
    table = {"32": "float", "fp32": "float", "float32": "float", "16": "fp16", "float16": "fp16", "bfloat16": "bf16"}
    text = str(value).lower() if value is not None else "float"
    return table.get(text, text)


def _token_length(value: Any) -> Any:
    """The GUI writes "75" as a string; sd-scripts' default (not set) is 75."""
    return 75 if value is None else int(value)


def _every_n_epochs(value: Any) -> Any:
    # LETS passed --save_every_n_epochs=999999 for "don't save epochs"; the GUI writes 0
    if isinstance(value, str):
        value = int(value)
    if value is None or value == 0 or value >= 999999:
        return None
    return value


def _warmup_percent(value: Any) -> Any:
    """The kohya_ss GUI's `lr_warmup` is a percentage of the steps."""
    return 0.0 if value is None else float(value) / 100.0


def _number_list(value: Any) -> Any:
    """The GUI stores block lists as "1,1,0.5,..." strings."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return [float(p) if any(c in p for c in ".eE") else int(p) for p in parts]
        except ValueError:
            return value  # a preset name like "cosine+0.2": the config validates it
    return value


def _key_value_args(value: Any) -> dict[str, Any]:
    """Optimizer/scheduler/network arguments: a dict, a list of "key=value", or the GUI's string
    "weight_decay=0.1 betas=0.9,0.99"."""
    if value is None or value == []:
        return {}
    if isinstance(value, dict):
        return dict(value)
    items = value.split() if isinstance(value, str) else list(value)
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"{item!r} is not key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = raw.strip()
    return out


def _gui_network_type(value: Any) -> Any:
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
}


def _optimizer_name(value: Any) -> Any:
    """sd-scripts compares optimizer names case-insensitively (`AdamW8Bit` is common)."""
    return _OPTIMIZER_NAMES.get(str(value).lower(), value)


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
    "vae": Target("model.vae"),
    "clip_skip": Target("model.clip_skip", _none_to(1)),
    "max_clip_token_length": Target("model.max_token_length", _token_length),
    "max_token_length": Target("model.max_token_length", _token_length),
    "lowram": Target("model.lowram"),
    # dataset
    "img_folder": Target("dataset.img_folder"),
    "train_data_dir": Target("dataset.img_folder"),
    "reg_img_folder": Target("dataset.reg_img_folder"),
    "reg_data_dir": Target("dataset.reg_img_folder"),
    "prior_loss_weight": Target("dataset.prior_loss_weight"),
    "caption_extension": Target("dataset.caption_extension", _none_to(".caption")),
    "buckets": Target("dataset.enable_bucket"),
    "enable_bucket": Target("dataset.enable_bucket"),
    "min_bucket_resolution": Target("dataset.min_bucket_reso"),
    "min_bucket_reso": Target("dataset.min_bucket_reso"),
    "max_bucket_resolution": Target("dataset.max_bucket_reso"),
    "max_bucket_reso": Target("dataset.max_bucket_reso"),
    "bucket_reso_steps": Target("dataset.bucket_reso_steps"),
    "bucket_no_upscale": Target("dataset.bucket_no_upscale"),
    "shuffle_captions": Target("dataset.shuffle_caption"),
    "shuffle_caption": Target("dataset.shuffle_caption"),
    "keep_tokens": Target("dataset.keep_tokens"),
    "caption_dropout_rate": Target("dataset.caption_dropout_rate"),
    "caption_dropout_every_n_epochs": Target("dataset.caption_dropout_every_n_epochs"),
    "caption_tag_dropout_rate": Target("dataset.caption_tag_dropout_rate"),
    "weighted_captions": Target("dataset.weighted_captions"),
    "flip_aug": Target("dataset.flip_aug"),
    "color_aug": Target("dataset.color_aug"),
    "random_crop": Target("dataset.random_crop"),
    "cache_latents": Target("dataset.cache_latents"),
    "cache_latents_to_disk": Target("dataset.cache_latents_to_disk"),
    "vae_batch_size": Target("dataset.vae_batch_size", _zero_off),
    "num_workers": Target("dataset.max_data_loader_n_workers"),
    "max_data_loader_n_workers": Target("dataset.max_data_loader_n_workers"),
    "persistent_workers": Target("dataset.persistent_data_loader_workers"),
    "persistent_data_loader_workers": Target("dataset.persistent_data_loader_workers"),
    # network
    "net_dim": Target("network.dim"),
    "network_dim": Target("network.dim"),
    "alpha": Target("network.alpha"),
    "network_alpha": Target("network.alpha"),
    "conv_dim": Target("network.conv_dim", _zero_off),
    "conv_alpha": Target("network.conv_alpha", _zero_off),
    "LoRA_type": Target("network.type", _gui_network_type),
    "lora_model_for_resume": Target("network.network_weights"),
    "network_weights": Target("network.network_weights"),
    "lora_network_weights": Target("network.network_weights"),
    "dim_from_weights": Target("network.dim_from_weights"),
    "network_dropout": Target("network.dropout", _zero_off),
    "rank_dropout": Target("network.rank_dropout", _zero_off),
    "module_dropout": Target("network.module_dropout", _zero_off),
    "block_dims": Target("network.block_dims", _number_list),
    "block_alphas": Target("network.block_alphas", _number_list),
    "conv_block_dims": Target("network.conv_block_dims", _number_list),
    "conv_block_alphas": Target("network.conv_block_alphas", _number_list),
    "conv_dims": Target("network.conv_block_dims", _number_list),  # older GUI name
    "conv_alphas": Target("network.conv_block_alphas", _number_list),  # older GUI name
    "down_lr_weight": Target("network.down_lr_weight", _number_list),
    "mid_lr_weight": Target("network.mid_lr_weight", _number_list),
    "up_lr_weight": Target("network.up_lr_weight", _number_list),
    "block_lr_zero_threshold": Target("network.block_lr_zero_threshold"),
    # optimisation
    "optimizer_type": Target("optim.optimizer", _optimizer_name),
    "optimizer": Target("optim.optimizer", _optimizer_name),
    "optimizer_args": Target("optim.optimizer_args", _key_value_args),
    "learning_rate": Target("optim.learning_rate"),
    "text_encoder_lr": Target("optim.text_encoder_lr"),
    "unet_lr": Target("optim.unet_lr"),
    "scheduler": Target("optim.lr_scheduler"),
    "lr_scheduler": Target("optim.lr_scheduler"),
    "cosine_restarts": Target("optim.lr_scheduler_num_cycles"),
    "lr_scheduler_num_cycles": Target("optim.lr_scheduler_num_cycles"),
    "scheduler_power": Target("optim.lr_scheduler_power"),
    "lr_scheduler_power": Target("optim.lr_scheduler_power"),
    "warmup_lr_ratio": Target("optim.lr_warmup_ratio"),
    "lr_warmup": Target("optim.lr_warmup_ratio", _warmup_percent),
    "lr_scheduler_args": Target("optim.lr_scheduler_args", _key_value_args),
    "max_grad_norm": Target("optim.max_grad_norm"),
    "gradient_acc_steps": Target("optim.gradient_accumulation_steps"),
    "gradient_accumulation_steps": Target("optim.gradient_accumulation_steps"),
    "gradient_checkpointing": Target("optim.gradient_checkpointing"),
    "mixed_precision": Target("optim.mixed_precision", _precision),
    "full_fp16": Target("optim.full_fp16"),
    "full_bf16": Target("optim.full_bf16"),
    "scale_weight_norms": Target("optim.scale_weight_norms", _zero_off),
    # training
    "batch_size": Target("training.batch_size"),
    "train_batch_size": Target("training.batch_size"),
    "num_epochs": Target("training.epochs"),
    "epoch": Target("training.epochs"),
    "max_train_epochs": Target("training.max_train_epochs", _zero_off),
    "max_steps": Target("training.max_steps", _zero_off),
    "max_train_steps": Target("training.max_steps", _zero_off),
    "test_seed": Target("training.seed"),
    "seed": Target("training.seed"),
    "noise_offset": Target("training.noise_offset"),
    "noise_offset_type": Target("training.noise_offset_type", _lower),
    "adaptive_noise_scale": Target("training.adaptive_noise_scale", _zero_off),
    "noise_offset_random_strength": Target("training.noise_offset_random_strength"),
    "multires_noise_iterations": Target("training.multires_noise_iterations"),
    "multires_noise_discount": Target("training.multires_noise_discount"),
    "ip_noise_gamma": Target("training.ip_noise_gamma", _zero_off),
    "min_snr_gamma": Target("training.min_snr_gamma", _zero_off),
    "min_timestep": Target("training.min_timestep"),
    "max_timestep": Target("training.max_timestep"),
    "loss_type": Target("training.loss_type"),
    "huber_c": Target("training.huber_c"),
    "huber_schedule": Target("training.huber_schedule"),
    "v_pred_like_loss": Target("training.v_pred_like_loss", _zero_off),
    "debiased_estimation_loss": Target("training.debiased_estimation_loss"),
    "zero_terminal_snr": Target("training.zero_terminal_snr"),
    # a percentage in the GUI (older files: stop_text_encoder_training, newer: ..._pct)
    "stop_text_encoder_training": Target("training.stop_text_encoder_training"),
    "stop_text_encoder_training_pct": Target("training.stop_text_encoder_training"),
    # saving
    "output_folder": Target("saving.output_folder"),
    "output_dir": Target("saving.output_folder"),
    "change_output_name": Target("saving.output_name"),
    "output_name": Target("saving.output_name"),
    "save_as": Target("saving.save_model_as"),
    "save_model_as": Target("saving.save_model_as"),
    "save_precision": Target("saving.save_precision", _save_precision),
    "save_every_n_epochs": Target("saving.save_every_n_epochs", _every_n_epochs),
    "save_every_n_steps": Target("saving.save_every_n_steps", _zero_off),
    "save_last_n_epochs": Target("saving.save_last_n_epochs", _zero_off),
    "save_last_n_steps": Target("saving.save_last_n_steps", _zero_off),
    "save_last_n_epochs_state": Target("saving.save_last_n_epochs_state", _zero_off),
    "save_last_n_steps_state": Target("saving.save_last_n_steps_state", _zero_off),
    "save_state": Target("saving.save_state"),
    "load_previous_save_state": Target("saving.resume"),
    "resume": Target("saving.resume"),
    "training_comment": Target("saving.training_comment"),
    "no_meta": Target("saving.no_metadata"),
    "no_metadata": Target("saving.no_metadata"),
    # sampling (the 2023-05 popup wrote `sample_every_n_epoch`, a key sd-scripts never had)
    "sample_prompts": Target("sampling.sample_prompts"),
    "sample_sampler": Target("sampling.sample_sampler"),
    "sample_every_n_steps": Target("sampling.sample_every_n_steps", _zero_off),
    "sample_every_n_epochs": Target("sampling.sample_every_n_epochs", _zero_off),
    "sample_every_n_epoch": Target("sampling.sample_every_n_epochs", _zero_off),
    # logging
    "log_dir": Target("logging.log_dir"),
    "logging_dir": Target("logging.log_dir"),
    "log_prefix": Target("logging.log_prefix"),
}

# Keys whose meaning spreads over several fields (handled by `_apply_special_keys`), with the
# fields each one sets; a skip list may name them.
SPECIAL_KEYS: dict[str, tuple[str, ...]] = {
    "v2": ("model.family",),
    "sdxl": ("model.family",),
    "xformers": ("model.attention",),
    "mem_eff_attn": ("model.attention",),
    "use_8bit_adam": ("optim.optimizer",),
    "use_lion": ("optim.optimizer",),
    "8bit_adam": ("optim.optimizer",),  # the key LETS' "adamw" button wrote by mistake
    "unet_only": ("network.train_on",),
    "text_only": ("network.train_on",),
    "network_train_unet_only": ("network.train_on",),
    "network_train_text_encoder_only": ("network.train_on",),
    "tag_occurrence_txt_file": ("saving.tag_file",),
    "sort_tag_occurrence_alphabetically": ("saving.tag_file",),
    "train_resolution": ("dataset.resolution",),
    "resolution": ("dataset.resolution",),
    "max_resolution": ("dataset.resolution",),
    "height_resolution": ("dataset.resolution",),
    "network_module": ("network.type",),
    "lyco": ("network.type",),
    "locon": ("network.type",),
    "locon_dim": ("network.conv_dim",),
    "locon_alpha": ("network.conv_alpha",),
    "network_args": (
        "network.type",
        "network.conv_dim",
        "network.conv_alpha",
        "network.dropout",
        "network.rank_dropout",
        "network.module_dropout",
        "network.block_dims",
        "network.block_alphas",
        "network.conv_block_dims",
        "network.conv_block_alphas",
        "network.down_lr_weight",
        "network.mid_lr_weight",
        "network.up_lr_weight",
        "network.block_lr_zero_threshold",
    ),
}

# Keys about the wizard session that wrote the file, not about the training: LETS' own loader
# skipped them too. They are dropped (and listed) on import.
SESSION_KEYS = frozenset(
    {
        "save_json_folder",
        "save_json_name",
        "save_json_only",
        "load_json_path",
        "json_load_skip_list",
        "multi_run_folder",
        "list_of_json_to_run",  # LETS' save_json wrote it as null into every file
    }
)

# Settings of the GUI or the launcher that do not change what is trained: dropped with the reason.
IGNORED_KEYS: dict[str, str] = {
    "model_list": "the GUI's model quick-pick menu; model.base_model is what counts",
    "num_cpu_threads_per_process": "a setting of `accelerate launch`, not of the training",
    "tokenizer_cache_dir": "the CLIP tokenizer ships with lora-wizard (it works offline)",
    "sdxl_no_half_vae": "the VAE's precision is the engine's choice (the SDXL VAE overflows in fp16)",
}


@dataclass(frozen=True)
class Unsupported:
    reason: str
    off: tuple[Any, ...] = ()  # values meaning "not used", besides null, false, "", 0, [] and {}


_HUB = "uploading to a hub is not offered (lora-wizard works offline)"
_TB_ONLY = "only TensorBoard logging is offered (logging.log_dir)"

# Options the old tools had that this product does not offer. A file that leaves them at their
# "off" value imports fine; one that turns them on is refused with the reason.
UNSUPPORTED_KEYS: dict[str, Unsupported] = {
    "token_warmup_min": Unsupported("token warm-up is not offered", off=(1,)),
    "token_warmup_step": Unsupported("token warm-up is not offered"),
    "face_crop_aug_range": Unsupported("face-crop augmentation is not offered"),
    "dataset_config": Unsupported("dataset TOML files are not read; point dataset.img_folder at the image folder"),
    "lr_scheduler_type": Unsupported("custom scheduler classes are not offered; pick one of optim.lr_scheduler"),
    "huggingface_repo_id": Unsupported(_HUB),
    "huggingface_token": Unsupported(_HUB),
    "huggingface_repo_type": Unsupported(_HUB),
    "huggingface_path_in_repo": Unsupported(_HUB),
    "huggingface_repo_visibility": Unsupported(_HUB),
    "save_state_to_huggingface": Unsupported(_HUB),
    "resume_from_huggingface": Unsupported(_HUB),
    "async_upload": Unsupported(_HUB),
    "log_with": Unsupported(_TB_ONLY, off=("tensorboard",)),
    "use_wandb": Unsupported(_TB_ONLY),
    "wandb_api_key": Unsupported(_TB_ONLY),
    "log_tracker_name": Unsupported(_TB_ONLY),
    "save_n_epoch_ratio": Unsupported("use saving.save_every_n_epochs instead"),
    "additional_parameters": Unsupported("extra command-line arguments are not read; set the matching config fields"),
    "no_token_padding": Unsupported("captions are always padded to max_token_length"),
    "scale_v_pred_loss_like_noise_pred": Unsupported("use training.v_pred_like_loss or min_snr_gamma instead"),
    "sdxl_cache_text_encoder_outputs": Unsupported("caching text-encoder outputs is not offered"),
    # LyCORIS/DyLoRA knobs the GUI writes for every network type, at these defaults when unused
    "factor": Unsupported("the LoKr factor is not offered (lora-wizard uses LyCORIS' default)", off=(-1,)),
    "decompose_both": Unsupported("LoKr decompose_both is not offered"),
    "use_cp": Unsupported("CP decomposition of the 3x3 convs is not offered"),
    "unit": Unsupported("DyLoRA is not offered", off=(1,)),
    "train_on_input": Unsupported("IA3 is not offered", off=(True,)),
}

# Without these a run has nothing to train on: LETS asked for them every time, so an empty value
# in a file means "ask me", and silently training the built-in demo instead would be wrong.
REQUIRED_KEYS = frozenset(
    {"base_model", "pretrained_model_name_or_path", "img_folder", "train_data_dir", "output_folder", "output_dir"}
)

_EMPTY: tuple[Any, ...] = (None, False, "", 0, [], {})


def _is_off(key: str, value: Any) -> bool:
    rule = UNSUPPORTED_KEYS[key]
    return any(value == off and type(value) is type(off) for off in rule.off) or value in _EMPTY


@dataclass
class FlatImport:
    """The nested dict built from a flat file, the keys left out silently (session settings, options
    at their "off" value, values the file's own settings disable), and notes for the user."""

    nested: dict[str, dict[str, Any]]
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_flat_config(raw: dict[str, Any]) -> bool:
    """True for LETS/kohya flat files: no `version` and no section objects."""
    return "version" not in raw and not any(isinstance(v, dict) and k in SECTIONS for k, v in raw.items())


def flat_key_paths(key: str) -> tuple[str, ...]:
    """The config fields a flat key sets (empty for session keys and unknown names)."""
    if key in FLAT_KEYS:
        return (FLAT_KEYS[key].path,)
    return SPECIAL_KEYS.get(key, ())


def known_flat_keys() -> list[str]:
    return [*FLAT_KEYS, *SPECIAL_KEYS, *SESSION_KEYS, *IGNORED_KEYS, *UNSUPPORTED_KEYS]


def flat_to_nested(raw: dict[str, Any], source: str = "config") -> FlatImport:
    """Map a flat LETS/kohya dict onto the nested layout. Raises ConfigError naming every bad key."""
    # The GUI writes "" where LETS wrote null: one spelling of "not set" from here on.
    raw = {key: (None if value == "" else value) for key, value in raw.items()}
    out = FlatImport(nested={})
    problems: list[str] = []
    set_by: dict[str, tuple[str, Any]] = {}  # path -> (key, value), to catch two keys disagreeing

    for key, value in raw.items():
        if key in SESSION_KEYS:
            out.dropped.append(key)
        elif key in IGNORED_KEYS:
            out.notes.append(f"{key} is ignored: {IGNORED_KEYS[key]}")
        elif key in UNSUPPORTED_KEYS:
            if _is_off(key, value):
                out.dropped.append(key)
            else:
                problems.append(f"{key}={value!r}: {UNSUPPORTED_KEYS[key].reason}; remove it")
        elif key in REQUIRED_KEYS and (value is None or not str(value).strip()):
            path = FLAT_KEYS[key].path
            problems.append(f"{key} is empty: set it (it becomes {path}), or remove the key to use the default")
        elif key in FLAT_KEYS:
            target = FLAT_KEYS[key]
            try:
                converted = target.convert(value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{key}={value!r} cannot be read ({exc}); fix the value")
                continue
            if converted is None:  # not set: the config's default applies
                continue
            earlier = set_by.get(target.path)
            if earlier is not None and earlier[1] != converted:
                problems.append(
                    f"{earlier[0]}={earlier[1]!r} and {key}={converted!r} both set {target.path}: keep one"
                )
                continue
            set_by[target.path] = (key, converted)
            section, name = target.path.split(".")
            out.nested.setdefault(section, {})[name] = converted
        elif key not in SPECIAL_KEYS:
            close = difflib.get_close_matches(key, known_flat_keys(), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")

    if not problems:
        _apply_special_keys(raw, out, problems)
    if problems:
        raise ConfigError(problems_message(f"{source} (LETS/kohya flat config)", problems))
    out.nested = {section: values for section, values in out.nested.items() if values}
    return out


def _apply_special_keys(raw: dict[str, Any], out: FlatImport, problems: list[str]) -> None:
    nested = out.nested
    model = nested.setdefault("model", {})
    # v2=false is LETS' default answer, not a statement about the weights: the family stays "auto"
    # (read from the checkpoint) unless a file says SD2 or SDXL.
    if raw.get("sdxl") and raw.get("v2"):
        problems.append("v2 and sdxl are both true; keep the one that matches the base model")
    elif raw.get("sdxl"):
        model["family"] = "sdxl"
    elif raw.get("v2"):
        model["family"] = "sd2"

    if raw.get("mem_eff_attn"):  # sd-scripts: mem_eff_attn wins over xformers
        model["attention"] = "mem_eff"
    elif "xformers" in raw:
        # LETS stored a bool (true: memory-efficient attention), the GUI a kernel name. Torch SDPA
        # is today's memory-efficient kernel, so only the explicit name "xformers" asks for xformers.
        value = raw["xformers"]
        model["attention"] = "xformers" if isinstance(value, str) and value.lower() == "xformers" else "sdpa"

    _optimizer_from_flags(raw, nested.setdefault("optim", {}), out.notes)

    network = nested.setdefault("network", {})
    unet_only = raw.get("unet_only") or raw.get("network_train_unet_only")
    text_only = raw.get("text_only") or raw.get("network_train_text_encoder_only")
    if unet_only and text_only:
        problems.append("unet_only and text_only are both set; keep at most one")
    elif unet_only:
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

    _resolution(raw, nested.setdefault("dataset", {}), problems)
    _network_type(raw, out, problems)
    _inactive_gui_values(raw, out)


def _optimizer_from_flags(raw: dict[str, Any], optim: dict[str, Any], notes: list[str]) -> None:
    if "optimizer" in optim or not any(k in raw for k in ("use_8bit_adam", "use_lion", "8bit_adam")):
        return
    if raw.get("use_lion"):
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


def _side(value: Any) -> int | list[int]:
    """One resolution value: 512, "512", "768,512" or [768, 512]."""
    if isinstance(value, str):
        parts = [int(p) for p in value.replace(" ", "").split(",")]
        return parts[0] if len(parts) == 1 else parts
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _resolution(raw: dict[str, Any], dataset: dict[str, Any], problems: list[str]) -> None:
    key = next((k for k in ("train_resolution", "resolution", "max_resolution") if raw.get(k) is not None), None)
    if key is None:
        return
    try:
        width = _side(raw[key])
    except ValueError:
        problems.append(f"{key}={raw[key]!r} is not a resolution; write 512 or \"768,512\" (width,height)")
        return
    height = raw.get("height_resolution")
    if isinstance(width, int) and height not in (None, width):
        width = [width, height]
    if isinstance(width, list) and len(width) == 2 and width[0] == width[1]:
        width = width[0]  # "512,512" is the square 512
    dataset["resolution"] = width


_LYCORIS_ALGOS = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr"}
_NETWORK_ARG_NUMBERS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_lr_zero_threshold")
_NETWORK_ARG_LISTS = (
    "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
)
_KOHYA_MODULES = ("networks.lora", "sd_scripts.networks.lora")


def _network_type(raw: dict[str, Any], out: FlatImport, problems: list[str]) -> None:
    network = out.nested.setdefault("network", {})
    module = str(raw.get("network_module") or "networks.lora")
    lycoris = bool(raw.get("lyco")) or module.endswith("lycoris.kohya")
    if not lycoris and module not in _KOHYA_MODULES:
        problems.append(f"network_module={module!r} is not offered; use networks.lora or lycoris.kohya")
        return

    if raw.get("locon"):  # LETS' pre-LyCORIS LoCon switch
        network["type"] = "locon"
        for old, new in (("locon_dim", "conv_dim"), ("locon_alpha", "conv_alpha")):
            if raw.get(old) is not None:
                network[new] = raw[old]

    try:
        args = _key_value_args(raw.get("network_args"))
    except (TypeError, ValueError) as exc:
        problems.append(f"network_args: {exc}")
        return
    algo = None
    for key, value in args.items():
        if key in _NETWORK_ARG_NUMBERS:
            network[key] = value
        elif key == "dropout":  # LyCORIS' name of the neuron dropout
            network["dropout"] = value
        elif key in _NETWORK_ARG_LISTS:
            network[key] = _number_list(value)
        elif key == "algo":
            algo = str(value).lower()
        else:
            problems.append(f"network_args key {key!r} is not offered")

    if "LoRA_type" in raw and network.get("type") == "lora":
        # The GUI keeps conv_dim/conv_alpha for every type but passes them only for LoCon types.
        for name in ("conv_dim", "conv_alpha"):
            if network.pop(name, None) is not None:
                out.dropped.append(name)
        return
    if lycoris:
        # LyCORIS' "lora" algorithm is LoCon; without conv_dim it has no conv part, i.e. plain LoRA.
        kind = _LYCORIS_ALGOS.get(algo or "lora", algo)
        network.setdefault("type", "lora" if kind == "locon" and not network.get("conv_dim") else kind)
    elif network.get("conv_dim") and network.get("type", "lora") == "lora":
        network["type"] = "locon"  # sd-scripts' LoRA with conv_dim *is* LoCon


def _inactive_gui_values(raw: dict[str, Any], out: FlatImport) -> None:
    """Drop values of options the file's own settings switch off (the GUI writes them anyway)."""
    training = out.nested.get("training", {})

    def drop(*names: str) -> None:
        for name in names:
            if name in training:
                del training[name]
                out.dropped.append(name)

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
