"""The `ss_*` and `modelspec.*` metadata written into a LoRA, as sd-scripts writes them.

A1111's LoRA tab, the additional-networks extension, Civitai and metadata viewers read these keys,
so names and value formats follow sd-scripts' train_network.py (every value a string). The mapping
from our config vocabulary to the kohya keys lives here, once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.config.schema import ModelFamily, NetworkConfig, NetworkType, TrainConfig
from engine.data.plan import RunPlan

#: what --no_metadata keeps (sd-scripts' SS_METADATA_MINIMUM_KEYS) - enough for UIs to filter by model
MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args")

BASE_MODEL_VERSION = {ModelFamily.SD1: "sd_v1", ModelFamily.SD2: "sd_v2", ModelFamily.SDXL: "sdxl_base_v1-0"}


@dataclass(frozen=True)
class RunFacts:
    """What the metadata needs beyond the config and the plan."""

    family: ModelFamily
    session_id: int
    started_at: float  # unix time
    optimizer: str  # ss_optimizer, e.g. "torch.optim.adamw.AdamW(weight_decay=0.1)"
    v_prediction: bool  # the objective trained (the config's word, or the model's)
    clip_skip: int  # the text encoder layer read, counted from its end (engine.text.encoding.clip_skip_used)


def architecture(family: ModelFamily, v_parameterization: bool) -> str:
    if family == ModelFamily.SDXL:
        return "stable-diffusion-xl-v1-base/lora"
    if family == ModelFamily.SD2:
        return "stable-diffusion-v2-768-v/lora" if v_parameterization else "stable-diffusion-v2-512/lora"
    return "stable-diffusion-v1/lora"


def modelspec(cfg: TrainConfig, facts: RunFacts) -> dict[str, str]:
    width, height = cfg.dataset.width_height
    tr = cfg.training
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture(facts.family, facts.v_prediction),
        # sd-scripts marks SD1/SD2 LoRA as diffusers-style and SDXL LoRA as SGM-style implementations
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if facts.family == ModelFamily.SDXL
        else "diffusers",
        "modelspec.title": cfg.saving.output_name or f"LoRA@{facts.started_at}",
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": datetime.fromtimestamp(int(facts.started_at)).isoformat(),
        "modelspec.prediction_type": "v" if facts.v_prediction else "epsilon",
        "modelspec.encoder_layer": str(facts.clip_skip),
    }
    if tr.min_timestep != 0 or tr.max_timestep != 1000:
        spec["modelspec.timestep_range"] = f"{tr.min_timestep},{tr.max_timestep}"
    return spec


def _dirs(subsets) -> str:
    return json.dumps({s.folder.name: {"n_repeats": s.repeats, "img_count": len(s.images)} for s in subsets})


def bucket_info(cfg: TrainConfig, plan: RunPlan) -> dict | None:
    """sd-scripts' ss_bucket_info (train_util.BaseDataset.make_buckets): the used buckets in sorted
    order (its BucketManager lists a bucket once an image lands in it, then sorts them), and the
    mean |aspect-ratio error| of the images, each counted once; None without bucketing."""
    import numpy as np

    if not cfg.dataset.enable_bucket:
        return None
    errors = [abs(item.choice.ar_error) for item in plan.items]
    return {
        "buckets": {i: {"resolution": list(reso), "count": count} for i, (reso, count) in enumerate(sorted(plan.bucket_counts.items()))},
        # numpy's mean, as sd-scripts computes it (its pairwise sum can differ from sum() in the last bit)
        "mean_img_ar_error": float(np.mean(np.abs(np.array(errors)))) if errors else 0,
    }


def tag_frequency(plan: RunPlan) -> dict[str, dict[str, int]]:
    """ss_tag_frequency: per folder, training and regularisation alike, how many captions hold
    each tag, over every image of the folder (sd-scripts' `set_tag_frequency`, called for each
    subset as it is loaded). The plan holds its images' captions; a regularisation image the
    balancing left out is read here."""
    from engine.data.captions import count_tags, read_caption

    def caption_of(record) -> str:
        if record.path in plan.captions:
            return plan.captions[record.path]
        if record.caption_path is None:
            return record.class_caption
        return read_caption(record.caption_path, all_lines=record.rules.wildcard)

    by_folder: dict[str, list[str]] = {}
    for subset in (*plan.subsets, *plan.reg_subsets):
        by_folder.setdefault(subset.folder.name, []).extend(caption_of(record) for record in subset.images)
    return {folder: dict(count_tags(texts)) for folder, texts in by_folder.items()}


def _hashes(values: dict[str, object], path_text: str, key: str, new_key: str) -> None:
    """sd-scripts' model hashes of a model file (none for a folder or the built-in model)."""
    from engine.models.hashes import model_hashes

    hashes = model_hashes(path_text)
    if hashes is not None:
        values[key] = hashes.legacy
        values[new_key] = hashes.sha256


def training_metadata(cfg: TrainConfig, net: NetworkConfig, plan: RunPlan, facts: RunFacts) -> dict[str, str]:
    """Everything known when training starts; `per_save` adds the epoch/step of each file. `net`
    is the network as built (its ranks may come from the LoRA it started from)."""
    values: dict[str, object] = {
        **_run_values(cfg, plan, facts),
        **_network_values(net, facts),
        **_optim_values(cfg),
        **_noise_and_loss_values(cfg),
        **_dataset_values(cfg, plan),
    }
    args = network_args(net)
    if args:
        values["ss_network_args"] = json.dumps(args)
    _hashes(values, cfg.model.base_model, "ss_sd_model_hash", "ss_new_sd_model_hash")
    if cfg.model.vae is not None:
        values["ss_vae_name"] = cfg.model.vae.name
        _hashes(values, str(cfg.model.vae), "ss_vae_hash", "ss_new_vae_hash")
    metadata = {key: str(value) for key, value in values.items()}
    metadata.update(modelspec(cfg, facts))
    if cfg.saving.no_metadata:
        metadata = {k: v for k, v in metadata.items() if k in MINIMUM_KEYS or k.startswith("modelspec.")}
    return metadata


def _run_values(cfg: TrainConfig, plan: RunPlan, facts: RunFacts) -> dict[str, object]:
    base_version = BASE_MODEL_VERSION[facts.family]
    if facts.family == ModelFamily.SD2 and facts.v_prediction:
        base_version += "_v"
    model_path = Path(cfg.model.base_model)
    return {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": facts.started_at,
        "ss_output_name": cfg.saving.output_name,
        "ss_num_train_images": plan.num_train_images,
        "ss_num_validation_images": 0,
        # images x repeats of the regularisation folders, before balancing (sd-scripts' num_reg_images)
        "ss_num_reg_images": sum(s.repeats * len(s.images) for s in plan.reg_subsets),
        "ss_num_batches_per_epoch": plan.batches_per_epoch,
        "ss_num_epochs": plan.epochs,
        "ss_max_train_steps": plan.total_steps,
        "ss_v2": facts.family == ModelFamily.SD2,
        "ss_base_model_version": base_version,
        "ss_clip_skip": facts.clip_skip,
        "ss_max_token_length": cfg.model.max_token_length,
        "ss_seed": cfg.training.seed,
        "ss_lowram": cfg.model.lowram,
        "ss_training_comment": cfg.saving.training_comment,
        "ss_sd_scripts_commit_hash": "lora-wizard",
        "ss_optimizer": facts.optimizer,
        "ss_batch_size_per_device": plan.batch_size,
        "ss_total_batch_size": plan.effective_batch,
        "ss_sd_model_name": model_path.name if model_path.exists() else cfg.model.base_model,
    }


def _network_values(net: NetworkConfig, facts: RunFacts) -> dict[str, object]:
    return {
        # LoCon is sd-scripts' LoRA module with conv ranks, so it keeps the same module name
        "ss_network_module": "networks.lora" if net.type in (NetworkType.LORA, NetworkType.LOCON) else "lycoris.kohya",
        "ss_network_dim": net.dim,
        "ss_network_alpha": net.alpha,
        "ss_network_dropout": net.dropout,
    }


def _optim_values(cfg: TrainConfig) -> dict[str, object]:
    opt = cfg.optim
    return {
        "ss_learning_rate": opt.learning_rate,
        "ss_text_encoder_lr": opt.text_encoder_lr,
        "ss_unet_lr": opt.unet_lr,
        "ss_gradient_checkpointing": opt.gradient_checkpointing,
        "ss_gradient_accumulation_steps": opt.gradient_accumulation_steps,
        "ss_lr_scheduler": opt.lr_scheduler.value,
        "ss_mixed_precision": opt.mixed_precision.value,
        "ss_full_fp16": opt.full_fp16,
        "ss_max_grad_norm": opt.max_grad_norm,
        "ss_scale_weight_norms": opt.scale_weight_norms,
        "ss_fp8_base": False,
        "ss_fp8_base_unet": False,
        "ss_min_snr_gamma": cfg.training.min_snr_gamma,
    }


def _noise_and_loss_values(cfg: TrainConfig) -> dict[str, object]:
    tr = cfg.training
    return {
        "ss_noise_offset": tr.noise_offset or None,
        "ss_multires_noise_iterations": tr.multires_noise_iterations or None,
        "ss_multires_noise_discount": tr.multires_noise_discount,
        "ss_adaptive_noise_scale": tr.adaptive_noise_scale,
        "ss_zero_terminal_snr": tr.zero_terminal_snr,
        "ss_ip_noise_gamma": tr.ip_noise_gamma,
        "ss_debiased_estimation": tr.debiased_estimation_loss,
        "ss_noise_offset_random_strength": tr.noise_offset_random_strength,
        "ss_ip_noise_gamma_random_strength": tr.ip_noise_gamma_random_strength,
        "ss_loss_type": tr.loss_type.value,
        "ss_huber_schedule": tr.huber_schedule.value,
        "ss_huber_scale": 1.0,
        "ss_huber_c": tr.huber_c if tr.huber_c is not None else 0.1,
    }


def _dataset_values(cfg: TrainConfig, plan: RunPlan) -> dict[str, object]:
    ds = cfg.dataset
    return {
        "ss_cache_latents": ds.cache_latents,
        # sd-scripts writes these off values as 0.0 / 0 (its argument defaults), not None
        "ss_caption_dropout_rate": ds.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": ds.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": ds.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": ds.prior_loss_weight,
        "ss_resolution": tuple(ds.width_height),
        "ss_color_aug": ds.color_aug,
        "ss_flip_aug": ds.flip_aug,
        "ss_random_crop": ds.random_crop,
        "ss_shuffle_caption": ds.shuffle_caption,
        "ss_enable_bucket": ds.enable_bucket,
        "ss_bucket_no_upscale": ds.bucket_no_upscale,
        "ss_min_bucket_reso": ds.min_bucket_reso,
        "ss_max_bucket_reso": ds.max_bucket_reso,
        "ss_keep_tokens": ds.keep_tokens,
        "ss_dataset_dirs": _dirs(plan.subsets),
        "ss_reg_dataset_dirs": _dirs(plan.reg_subsets),
        "ss_tag_frequency": json.dumps(tag_frequency(plan)),
        "ss_bucket_info": json.dumps(bucket_info(cfg, plan)),
    }


def per_save(metadata: dict[str, str], epoch: int, step: int, no_metadata: bool) -> dict[str, str]:
    if no_metadata:
        return dict(metadata)
    return {**metadata, "ss_training_finished_at": str(time.time()), "ss_steps": str(step), "ss_epoch": str(epoch)}


def network_args(net: NetworkConfig) -> dict[str, str]:
    """ss_network_args: the kohya network_args that describe this network (strings, as kohya's CLI)."""
    args: dict[str, str] = {}
    if net.conv_dim is not None:
        args["conv_dim"] = str(net.conv_dim)
        # an unset conv_alpha is 1.0 in the network (sd-scripts' default), so the file says 1.0 too
        args["conv_alpha"] = str(net.conv_alpha if net.conv_alpha is not None else 1.0)
    for name in ("rank_dropout", "module_dropout"):
        value = getattr(net, name)
        if value is not None:
            args[name] = str(value)
    from engine.network.blocks import block_network_args
    from engine.network.lycoris_adapter import lycoris_network_args

    return {**lycoris_network_args(net), **args, **block_network_args(net)}
