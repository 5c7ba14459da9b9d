"""A config as an sd-scripts run: a training TOML, a dataset TOML and the command that trains it.

The training TOML holds sd-scripts' argument names (kohya-ss/sd-scripts `--config_file`, read by
library/train_util.py `read_config_from_file`, which merges its tables), the dataset TOML the
folders as `[[datasets.subsets]]` (library/config_util.py), and the command is
`accelerate launch train_network.py --config_file ...` (sdxl_train_network.py for SDXL). Every
setting is written explicitly, so sd-scripts' own defaults never decide anything. A few settings
only lora-wizard reads (the tag list, timed state saves, the SDXL family when sd-scripts knows it
from the script) go into a `[lora_wizard]` table by their config names, which sd-scripts ignores
like any unknown key and which importing the files back reads. What sd-scripts' train_network.py cannot train the
same way is refused by name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.optimizers import REGISTRY
from engine.config.schema import (
    CAPTION_OPTIONS,
    DEMO_MODEL,
    SAMPLE_DATASET,
    Attention,
    ModelFamily,
    NetworkType,
    NoiseOffsetType,
    Optimizer,
    SubsetConfig,
    TagFile,
    TrainConfig,
    TrainOn,
)
from engine.errors import ConfigError

SCRIPTS = {ModelFamily.SD1: "train_network.py", ModelFamily.SD2: "train_network.py", ModelFamily.SDXL: "sdxl_train_network.py"}
_LYCORIS_ALGOS = {NetworkType.LOHA: "loha", NetworkType.LOKR: "lokr"}
_BLOCK_LISTS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight")


@dataclass(frozen=True)
class SdScriptsRun:
    """The files of an sd-scripts run, as data (engine/config/export_files.py writes them)."""

    training: dict[str, Any]  # training TOML tables; `dataset_config` is filled in when written
    dataset: dict[str, Any]  # dataset TOML tables
    script: str  # train_network.py or sdxl_train_network.py
    prompts: list[str] | None = None  # sample prompt lines to write into a prompt file
    notes: tuple[str, ...] = field(default=())


def sd_scripts_run(cfg: TrainConfig, family: ModelFamily, subsets: list[SubsetConfig]) -> SdScriptsRun:
    """The sd-scripts files for `cfg`, whose base model is of `family` and whose folders are
    `subsets` (the config's own list, or its `<repeats>_<name>` folders as scanned)."""
    _refuse_what_sd_scripts_cannot_train(cfg)
    notes: list[str] = []
    training = {
        "model": _model(cfg, family),
        "network": _network(cfg),
        "optimizer": _optimizer(cfg),
        "training": _training(cfg),
        "saving": _saving(cfg),
        "sampling": _sampling(cfg),
        "logging": {"logging_dir": _path(cfg.logging.log_dir), "log_prefix": cfg.logging.log_prefix},
        "lora_wizard": _own_settings(cfg, notes),
    }
    prompts = cfg.sampling.sample_prompts if isinstance(cfg.sampling.sample_prompts, list) else None
    return SdScriptsRun(_without_none(training), _dataset(cfg, subsets), SCRIPTS[family], prompts, tuple(notes))


def _refuse_what_sd_scripts_cannot_train(cfg: TrainConfig) -> None:
    problems = []
    if cfg.model.base_model == DEMO_MODEL:
        problems.append(f"model.base_model = {DEMO_MODEL}: sd-scripts cannot load the built-in demo model; set a checkpoint file or folder")
    if cfg.dataset.img_folder == SAMPLE_DATASET and not cfg.dataset.subsets:
        problems.append(f"dataset.img_folder = {SAMPLE_DATASET}: set the folder of your images (the sample dataset lives in lora-wizard's cache)")
    if cfg.training.stop_text_encoder_training:
        problems.append(
            f"training.stop_text_encoder_training = {cfg.training.stop_text_encoder_training}: sd-scripts' "
            "train_network.py cannot stop the text encoder part-way; set it to 0 to export"
        )
    if problems:
        raise ConfigError("cannot export to sd-scripts:\n" + "\n".join(f"  - {p}" for p in problems))


def _model(cfg: TrainConfig, family: ModelFamily) -> dict[str, Any]:
    m = cfg.model
    attention = {Attention.XFORMERS: "xformers", Attention.MEM_EFF: "mem_eff_attn", Attention.SDPA: "sdpa"}[m.attention]
    return {
        "pretrained_model_name_or_path": m.base_model,
        "v2": True if family == ModelFamily.SD2 else None,
        "v_parameterization": m.v_parameterization or None,
        "vae": _path(m.vae),
        "clip_skip": m.clip_skip,
        # sd-scripts takes 150 or 225; its default (no value) is 75
        "max_token_length": None if m.max_token_length == 75 else m.max_token_length,
        "lowram": m.lowram or None,
        attention: True,
    }


def _network(cfg: TrainConfig) -> dict[str, Any]:
    net = cfg.network
    args: list[str] = []
    if net.type in _LYCORIS_ALGOS:
        args.append(f"algo={_LYCORIS_ALGOS[net.type]}")
        if net.type == NetworkType.LOKR and net.lokr_factor != -1:
            args.append(f"factor={net.lokr_factor}")
    for name in ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout"):
        if getattr(net, name) is not None:
            args.append(f"{name}={_number(getattr(net, name))}")
    for name in _BLOCK_LISTS:
        value = getattr(net, name)
        if value is not None:
            args.append(f"{name}={','.join(_number(v) for v in value) if isinstance(value, list) else _number(value)}")
    if net.block_lr_zero_threshold:
        args.append(f"block_lr_zero_threshold={_number(net.block_lr_zero_threshold)}")
    return {
        "network_module": "lycoris.kohya" if net.type in _LYCORIS_ALGOS else "networks.lora",
        "network_dim": net.dim,
        "network_alpha": net.alpha,
        "network_dropout": net.dropout,
        "network_args": args or None,
        "network_train_unet_only": True if net.train_on == TrainOn.UNET_ONLY else None,
        "network_train_text_encoder_only": True if net.train_on == TrainOn.TEXT_ONLY else None,
        "network_weights": _path(net.network_weights),
        "dim_from_weights": net.dim_from_weights or None,
    }


def _optimizer(cfg: TrainConfig) -> dict[str, Any]:
    opt = cfg.optim
    raw = dict(opt.optimizer_args)
    if opt.optimizer == Optimizer.ADAFACTOR:
        # lora-wizard's Adafactor defaults differ from sd-scripts' (relative_step on there): state them
        raw = {**REGISTRY[Optimizer.ADAFACTOR].defaults, **raw}
    warmup: int | float | None = opt.lr_warmup_steps
    if warmup is None and opt.lr_warmup_ratio > 0:
        warmup = opt.lr_warmup_ratio  # a float below 1: sd-scripts reads it as a share of the steps
    return {
        "optimizer_type": opt.optimizer.value,
        "optimizer_args": [f"{key}={_literal(value)}" for key, value in raw.items()] or None,
        "learning_rate": opt.learning_rate,
        "unet_lr": opt.unet_lr,
        "text_encoder_lr": opt.text_encoder_lr,
        "lr_scheduler": opt.lr_scheduler.value,
        "lr_scheduler_num_cycles": opt.lr_scheduler_num_cycles,
        "lr_scheduler_power": opt.lr_scheduler_power,
        "lr_warmup_steps": warmup,
        "lr_scheduler_args": [f"{key}={_literal(value)}" for key, value in opt.lr_scheduler_args.items()] or None,
        "max_grad_norm": opt.max_grad_norm,
        "gradient_accumulation_steps": opt.gradient_accumulation_steps,
        "gradient_checkpointing": opt.gradient_checkpointing,
        "mixed_precision": opt.mixed_precision.value,
        "full_fp16": opt.full_fp16 or None,
        "full_bf16": opt.full_bf16 or None,
        "scale_weight_norms": opt.scale_weight_norms,
    }


def _training(cfg: TrainConfig) -> dict[str, Any]:
    tr, ds = cfg.training, cfg.dataset
    multires = tr.noise_offset_type == NoiseOffsetType.MULTIRES
    limit = {"max_train_steps": tr.max_steps} if tr.max_steps else {"max_train_epochs": tr.epoch_count}
    return {
        "train_batch_size": tr.batch_size,
        **limit,
        "seed": tr.seed,
        "noise_offset": None if multires else (tr.noise_offset or None),
        "adaptive_noise_scale": tr.adaptive_noise_scale,
        "noise_offset_random_strength": tr.noise_offset_random_strength or None,
        "multires_noise_iterations": tr.multires_noise_iterations if multires else None,
        "multires_noise_discount": tr.multires_noise_discount if multires else None,
        "ip_noise_gamma": tr.ip_noise_gamma,
        "ip_noise_gamma_random_strength": tr.ip_noise_gamma_random_strength or None,
        "min_snr_gamma": tr.min_snr_gamma,
        "min_timestep": tr.min_timestep,
        "max_timestep": tr.max_timestep,
        "loss_type": tr.loss_type.value,
        "huber_c": tr.huber_c,
        "huber_schedule": tr.huber_schedule.value,
        "v_pred_like_loss": tr.v_pred_like_loss,
        "debiased_estimation_loss": tr.debiased_estimation_loss or None,
        "zero_terminal_snr": tr.zero_terminal_snr or None,
        "prior_loss_weight": ds.prior_loss_weight,
        "weighted_captions": ds.weighted_captions or None,
        "cache_latents": ds.cache_latents,
        "cache_latents_to_disk": ds.cache_latents_to_disk,
        "vae_batch_size": ds.vae_batch_size,
        "max_data_loader_n_workers": ds.max_data_loader_n_workers,
        "persistent_data_loader_workers": ds.persistent_data_loader_workers,
    }


def _saving(cfg: TrainConfig) -> dict[str, Any]:
    sv = cfg.saving
    return {
        "output_dir": _path(sv.output_folder),
        "output_name": sv.output_name,
        "save_model_as": sv.save_model_as.value,
        "save_precision": sv.save_precision.value,
        "save_every_n_epochs": sv.save_every_n_epochs,
        "save_every_n_steps": sv.save_every_n_steps,
        "save_last_n_epochs": sv.save_last_n_epochs,
        "save_last_n_steps": sv.save_last_n_steps,
        "save_state": sv.save_state or None,
        "save_last_n_epochs_state": sv.save_last_n_epochs_state,
        "save_last_n_steps_state": sv.save_last_n_steps_state,
        "resume": _path(sv.resume),
        "training_comment": sv.training_comment,
        "no_metadata": sv.no_metadata or None,
    }


def _sampling(cfg: TrainConfig) -> dict[str, Any]:
    sp = cfg.sampling
    return {
        # a list of prompt lines is written to a prompt file next to the TOML (filled in then)
        "sample_prompts": None if isinstance(sp.sample_prompts, list) else _path(sp.sample_prompts),
        "sample_sampler": sp.sample_sampler.value,
        "sample_every_n_epochs": sp.sample_every_n_epochs,
        "sample_every_n_steps": sp.sample_every_n_steps,
    }


def _own_settings(cfg: TrainConfig, notes: list[str]) -> dict[str, Any]:
    """Config fields sd-scripts has no option for, by their dotted names: none changes a trained
    weight. sd-scripts ignores the table (unknown keys); lora-wizard's import reads them back."""
    sv, prompts = cfg.saving, cfg.sampling.sample_prompts
    own: dict[str, Any] = {
        # sd-scripts knows the family from its script and the weights, lora-wizard from this
        "model.family": None if cfg.model.family == ModelFamily.AUTO else cfg.model.family.value,
        "saving.tag_file": sv.tag_file.value,
        "saving.save_state_every_n_minutes": sv.save_state_every_n_minutes,
        "sampling.sample_prompts": prompts if isinstance(prompts, list) else None,
    }
    if sv.save_state_every_n_minutes:
        notes.append("saving.save_state_every_n_minutes: sd-scripts has no timed state saves; it saves states with each save")
    if sv.tag_file != TagFile.OFF:
        notes.append("saving.tag_file: sd-scripts writes no tag list beside the LoRA (the tags are in its metadata)")
    return own


def _dataset(cfg: TrainConfig, subsets: list[SubsetConfig]) -> dict[str, Any]:
    ds = cfg.dataset
    general = {name: getattr(ds, name) for name in CAPTION_OPTIONS}
    general.update(flip_aug=ds.flip_aug, color_aug=ds.color_aug, random_crop=ds.random_crop)
    dataset = {
        "resolution": list(ds.resolution) if isinstance(ds.resolution, tuple) else ds.resolution,
        "batch_size": cfg.training.batch_size,
        "enable_bucket": ds.enable_bucket,
        "min_bucket_reso": ds.min_bucket_reso,
        "max_bucket_reso": ds.max_bucket_reso,
        "bucket_reso_steps": ds.bucket_reso_steps,
        "bucket_no_upscale": ds.bucket_no_upscale,
        "subsets": [_without_none(_subset(s)) for s in subsets],
    }
    return {"general": _without_none(general), "datasets": [dataset]}


def _subset(subset: SubsetConfig) -> dict[str, Any]:
    values = subset.model_dump(mode="json", exclude_none=True)
    values["image_dir"] = str(subset.image_dir)
    if not subset.is_reg:
        values.pop("is_reg", None)
    return values


def _without_none(tables: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            inner = _without_none(value)
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


def _path(value: Path | str | None) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _literal(value: Any) -> str:
    """An argument value as text sd-scripts' `ast.literal_eval` reads back to the same value."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.capitalize()
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return repr(text)  # a word: quoted, so literal_eval gives the text back
        return text
    if isinstance(value, (list, tuple)):
        return ",".join(_literal(item) for item in value)
    return repr(value)
