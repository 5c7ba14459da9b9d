"""The one table of flat option names: which config field each sets, and how its value reads.

The names come from three tools that wrote flat settings: LoRA_Easy_Training_Scripts' ArgStore
JSON (`net_dim`, `img_folder`, ...), the kohya_ss GUI's JSON (`pretrained_model_name_or_path`,
`max_resolution`, `LoRA_type`, ...) and sd-scripts' own argument names, which its `--config_file`
TOML, LETS' TOML and the GUI's `additional_parameters` use (`network_dim`, `min_timestep`, ...).
Every import (flat JSON, TOML, command-line text) goes through this table; keys whose meaning
spreads over several fields are listed in SPECIAL_KEYS and handled by engine/config/flat_import.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import flat_values as v
from engine.config.flat_values import Convert


@dataclass(frozen=True)
class Target:
    path: str
    convert: Convert = v.same


FLAT_KEYS: dict[str, Target] = {
    # model
    "base_model": Target("model.base_model"),
    "pretrained_model_name_or_path": Target("model.base_model"),
    "v_parameterization": Target("model.v_parameterization"),
    "vae": Target("model.vae"),
    "clip_skip": Target("model.clip_skip", v.none_to(1)),
    "max_clip_token_length": Target("model.max_token_length", v.token_length),
    "max_token_length": Target("model.max_token_length", v.token_length),
    "lowram": Target("model.lowram"),
    # dataset
    "img_folder": Target("dataset.img_folder"),
    "train_data_dir": Target("dataset.img_folder"),
    "reg_img_folder": Target("dataset.reg_img_folder"),
    "reg_data_dir": Target("dataset.reg_img_folder"),
    "prior_loss_weight": Target("dataset.prior_loss_weight"),
    "caption_extension": Target("dataset.caption_extension", v.none_to(".caption")),
    "caption_extention": Target("dataset.caption_extension"),  # sd-scripts still reads its old misspelling
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
    "keep_tokens_separator": Target("dataset.keep_tokens_separator"),
    "caption_separator": Target("dataset.caption_separator"),
    "secondary_separator": Target("dataset.secondary_separator"),
    "enable_wildcard": Target("dataset.enable_wildcard"),
    "caption_prefix": Target("dataset.caption_prefix"),
    "caption_suffix": Target("dataset.caption_suffix"),
    "token_warmup_min": Target("dataset.token_warmup_min"),
    "token_warmup_step": Target("dataset.token_warmup_step"),
    "caption_dropout_rate": Target("dataset.caption_dropout_rate"),
    "caption_dropout_every_n_epochs": Target("dataset.caption_dropout_every_n_epochs"),
    "caption_tag_dropout_rate": Target("dataset.caption_tag_dropout_rate"),
    "weighted_captions": Target("dataset.weighted_captions"),
    "flip_aug": Target("dataset.flip_aug"),
    "color_aug": Target("dataset.color_aug"),
    "random_crop": Target("dataset.random_crop"),
    "cache_latents": Target("dataset.cache_latents"),
    "cache_latents_to_disk": Target("dataset.cache_latents_to_disk"),
    "vae_batch_size": Target("dataset.vae_batch_size", v.zero_off),
    "num_workers": Target("dataset.max_data_loader_n_workers"),
    "max_data_loader_n_workers": Target("dataset.max_data_loader_n_workers"),
    "persistent_workers": Target("dataset.persistent_data_loader_workers"),
    "persistent_data_loader_workers": Target("dataset.persistent_data_loader_workers"),
    # network
    "net_dim": Target("network.dim"),
    "network_dim": Target("network.dim"),
    "alpha": Target("network.alpha"),
    "network_alpha": Target("network.alpha"),
    "conv_dim": Target("network.conv_dim", v.zero_off),
    "conv_alpha": Target("network.conv_alpha", v.zero_off),
    "LoRA_type": Target("network.type", v.gui_network_type),
    "lora_model_for_resume": Target("network.network_weights"),
    "network_weights": Target("network.network_weights"),
    "lora_network_weights": Target("network.network_weights"),
    "dim_from_weights": Target("network.dim_from_weights"),
    "network_dropout": Target("network.dropout", v.zero_off),
    "rank_dropout": Target("network.rank_dropout", v.zero_off),
    "module_dropout": Target("network.module_dropout", v.zero_off),
    "block_dims": Target("network.block_dims", v.number_list),
    "block_alphas": Target("network.block_alphas", v.number_list),
    "conv_block_dims": Target("network.conv_block_dims", v.number_list),
    "conv_block_alphas": Target("network.conv_block_alphas", v.number_list),
    "conv_dims": Target("network.conv_block_dims", v.number_list),  # older GUI name
    "conv_alphas": Target("network.conv_block_alphas", v.number_list),  # older GUI name
    "down_lr_weight": Target("network.down_lr_weight", v.number_list),
    "mid_lr_weight": Target("network.mid_lr_weight", v.scalar_or_list),
    "up_lr_weight": Target("network.up_lr_weight", v.number_list),
    "block_lr_zero_threshold": Target("network.block_lr_zero_threshold"),
    # optimisation (the learning rates are SPECIAL_KEYS: 0 means different things per tool)
    "optimizer_type": Target("optim.optimizer", v.optimizer_name),
    "optimizer": Target("optim.optimizer", v.optimizer_name),
    "optimizer_args": Target("optim.optimizer_args", v.key_value_args),
    "scheduler": Target("optim.lr_scheduler"),
    "lr_scheduler": Target("optim.lr_scheduler"),
    "cosine_restarts": Target("optim.lr_scheduler_num_cycles"),
    "lr_scheduler_num_cycles": Target("optim.lr_scheduler_num_cycles"),
    "scheduler_power": Target("optim.lr_scheduler_power"),
    "lr_scheduler_power": Target("optim.lr_scheduler_power"),
    "warmup_lr_ratio": Target("optim.lr_warmup_ratio"),
    "warmup_ratio": Target("optim.lr_warmup_ratio"),  # LETS' TOML
    "lr_warmup": Target("optim.lr_warmup_ratio", v.warmup_percent),
    "lr_scheduler_args": Target("optim.lr_scheduler_args", v.literal_args),
    "max_grad_norm": Target("optim.max_grad_norm"),
    "gradient_acc_steps": Target("optim.gradient_accumulation_steps"),
    "gradient_accumulation_steps": Target("optim.gradient_accumulation_steps"),
    "gradient_checkpointing": Target("optim.gradient_checkpointing"),
    "mixed_precision": Target("optim.mixed_precision", v.precision),
    "full_fp16": Target("optim.full_fp16"),
    "full_bf16": Target("optim.full_bf16"),
    "scale_weight_norms": Target("optim.scale_weight_norms", v.zero_off),
    # training (the epoch and step limits are SPECIAL_KEYS: which wins depends on the tool)
    "batch_size": Target("training.batch_size"),
    "train_batch_size": Target("training.batch_size"),
    "test_seed": Target("training.seed"),
    "seed": Target("training.seed"),
    "noise_offset": Target("training.noise_offset"),
    "noise_offset_type": Target("training.noise_offset_type", v.lower),
    "adaptive_noise_scale": Target("training.adaptive_noise_scale", v.zero_off),
    "noise_offset_random_strength": Target("training.noise_offset_random_strength"),
    "multires_noise_iterations": Target("training.multires_noise_iterations"),
    "multires_noise_discount": Target("training.multires_noise_discount"),
    "ip_noise_gamma": Target("training.ip_noise_gamma", v.zero_off),
    "ip_noise_gamma_random_strength": Target("training.ip_noise_gamma_random_strength"),
    "min_snr_gamma": Target("training.min_snr_gamma", v.zero_off),
    "min_timestep": Target("training.min_timestep"),
    "max_timestep": Target("training.max_timestep"),
    "loss_type": Target("training.loss_type"),
    "huber_c": Target("training.huber_c"),
    "huber_schedule": Target("training.huber_schedule"),
    "v_pred_like_loss": Target("training.v_pred_like_loss", v.zero_off),
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
    "save_precision": Target("saving.save_precision", v.save_precision),
    "save_every_n_epochs": Target("saving.save_every_n_epochs", v.every_n_epochs),
    "save_every_n_steps": Target("saving.save_every_n_steps", v.zero_off),
    "save_last_n_epochs": Target("saving.save_last_n_epochs", v.zero_off),
    "save_last_n_steps": Target("saving.save_last_n_steps", v.zero_off),
    "save_last_n_epochs_state": Target("saving.save_last_n_epochs_state", v.zero_off),
    "save_last_n_steps_state": Target("saving.save_last_n_steps_state", v.zero_off),
    "save_state_every_n_minutes": Target("saving.save_state_every_n_minutes", v.zero_off),  # lora-wizard's own
    "save_state": Target("saving.save_state"),
    "load_previous_save_state": Target("saving.resume"),
    "resume": Target("saving.resume"),
    "training_comment": Target("saving.training_comment"),
    "no_meta": Target("saving.no_metadata"),
    "no_metadata": Target("saving.no_metadata"),
    # sampling (the 2023-05 popup wrote `sample_every_n_epoch`, a key sd-scripts never had)
    "sample_prompts": Target("sampling.sample_prompts"),
    "sample_sampler": Target("sampling.sample_sampler"),
    "sample_every_n_steps": Target("sampling.sample_every_n_steps", v.zero_off),
    "sample_every_n_epochs": Target("sampling.sample_every_n_epochs", v.zero_off),
    "sample_every_n_epoch": Target("sampling.sample_every_n_epochs", v.zero_off),
    # logging
    "log_dir": Target("logging.log_dir"),
    "logging_dir": Target("logging.log_dir"),
    "log_prefix": Target("logging.log_prefix"),
}

# Keys whose meaning spreads over several fields (engine/config/flat_import.py), with the fields
# each one sets; a skip list may name them.
_NETWORK_ARG_FIELDS = (
    "network.type", "network.conv_dim", "network.conv_alpha", "network.dropout", "network.rank_dropout",
    "network.module_dropout", "network.block_dims", "network.block_alphas", "network.conv_block_dims",
    "network.conv_block_alphas", "network.down_lr_weight", "network.mid_lr_weight", "network.up_lr_weight",
    "network.block_lr_zero_threshold",
)
_RATES = ("optim.learning_rate", "optim.unet_lr", "optim.text_encoder_lr", "network.train_on")
SPECIAL_KEYS: dict[str, tuple[str, ...]] = {
    "v2": ("model.family",),
    "sdxl": ("model.family",),
    "xformers": ("model.attention",),
    "mem_eff_attn": ("model.attention",),
    "sdpa": ("model.attention",),
    "use_8bit_adam": ("optim.optimizer",),
    "use_lion": ("optim.optimizer",),
    "use_lion_optimizer": ("optim.optimizer",),
    "8bit_adam": ("optim.optimizer",),  # the key LETS' "adamw" button wrote by mistake
    "learning_rate": _RATES,
    "unet_lr": _RATES,
    "text_encoder_lr": _RATES,
    "unet_only": ("network.train_on",),
    "text_only": ("network.train_on",),
    "network_train_unet_only": ("network.train_on",),
    "network_train_text_encoder_only": ("network.train_on",),
    "cache_text_encoder_outputs": ("network.train_on",),
    "sdxl_cache_text_encoder_outputs": ("network.train_on",),
    "lr_warmup_steps": ("optim.lr_warmup_steps", "optim.lr_warmup_ratio"),
    "num_epochs": ("training.epochs",),
    "epoch": ("training.epochs",),
    "max_train_epochs": ("training.max_train_epochs",),
    "max_steps": ("training.max_steps",),
    "max_train_steps": ("training.max_steps",),
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
    "network_args": _NETWORK_ARG_FIELDS,
    "dataset_config": ("dataset.subsets",),
    "factor": ("network.lokr_factor",),
}

# Keys about the session that wrote the file, not about the training: LETS' own loader skipped
# them too. They are dropped (and listed) on import.
SESSION_KEYS = frozenset(
    {
        "save_json_folder",
        "save_json_name",
        "save_json_only",
        "load_json_path",
        "json_load_skip_list",
        "multi_run_folder",
        "list_of_json_to_run",  # LETS' save_json wrote it as null into every file
        # LETS' TOML: its UI's own settings, handled before sd-scripts ran
        "easy_name",
        "save_toml",
        "save_toml_location",
        "train_mode",
        "config_file",
        "output_config",
        "save_as_bool",  # the GUI's own widget state
    }
)

#: settings of `accelerate launch`, which the kohya_ss GUI stores with the training settings
LAUNCH_KEYS = frozenset(
    {
        "num_cpu_threads_per_process", "num_processes", "num_machines", "multi_gpu", "gpu_ids", "main_process_port",
        "dynamo_backend", "dynamo_mode", "dynamo_use_fullgraph", "dynamo_use_dynamic", "extra_accelerate_launch_args",
    }
)

# Settings that do not change what is trained: dropped, with the reason.
IGNORED_KEYS: dict[str, str] = {
    "model_list": "the GUI's model quick-pick menu; model.base_model is what counts",
    "tokenizer_cache_dir": "the CLIP tokenizer ships with lora-wizard (it works offline)",
    "sdxl_no_half_vae": "the VAE's precision is the engine's choice (it always runs in fp32)",
    "no_half_vae": "the VAE's precision is the engine's choice (it always runs in fp32)",
    "highvram": "a memory placement hint; the engine places the models itself",
    "lowvram": "a memory placement hint; the engine places the models itself",
    "skip_cache_check": "the latent disk cache always checks its files against the images",
    "cache_text_encoder_outputs_to_disk": "text-encoder outputs are cached in memory when they can be",
    "tag_occurrence": "the tag list is written with every run (saving.tag_file)",
    "tag_file_location": "the tag list is written into the run folder",
    "name": "a LETS subset's display name",
    # sliders the GUI drew but never passed on (commented out in its common_gui.py, 2023-07)
    "sdxl_min_timestep": "a kohya_ss GUI slider that never reached sd-scripts",
    "sdxl_max_timestep": "a kohya_ss GUI slider that never reached sd-scripts",
    **{key: "a setting of `accelerate launch`, not of the training" for key in LAUNCH_KEYS},
}

# Without these a run has nothing to train on: LETS asked for them every time, so an empty value
# in a file means "ask me", and silently training the built-in demo instead would be wrong.
REQUIRED_KEYS = frozenset(
    {"base_model", "pretrained_model_name_or_path", "img_folder", "train_data_dir", "output_folder", "output_dir"}
)


def flat_key_paths(key: str) -> tuple[str, ...]:
    """The config fields a flat key sets (empty for session keys and unknown names)."""
    if key in FLAT_KEYS:
        return (FLAT_KEYS[key].path,)
    return SPECIAL_KEYS.get(key, ())
