"""The advanced questions, behind "advanced settings?" (default no), in the groups of the kohya_ss
GUI's advanced panel: blocks, dropouts (and the other regularisers), timesteps and loss, saving,
performance. While the gate is no they are out of play: not asked and not reset, so a loaded config
keeps its advanced values as they are. Block lists take a preset or numbers (wizard/block_answers.py)."""

from __future__ import annotations

from typing import Any

from engine.config.schema import (
    Attention,
    HuberSchedule,
    LossType,
    NoiseOffsetType,
    SaveFormat,
    SavePrecision,
)
from wizard.block_answers import (
    BLOCK_LIST_FIELDS,
    LR_WEIGHTS,
    fits_block_list,
    fits_lr_weights,
    parse_lr_weight,
    parse_mid_weight,
    parse_number_list,
)
from wizard.checks import clean_path
from wizard.draft import ADVANCED, Kind, Question
from wizard.predicates import (
    any_set_in_base,
    base_or,
    caches_latents,
    fixed,
    has_noise_offset,
    is_multires,
    is_set,
    logs_to_tensorboard,
    not_l2,
    not_v_prediction,
    resumes_from_lora,
    saves_state,
    uses_bf16,
    uses_fp16,
    wants,
    wants_block_lr,
    wants_conv_block_dims,
)

Q = Question


def adv(path: str, kind: Kind, group: str, **kw: Any) -> Question:
    """An advanced question of `group` (asked after loading a config too, when advanced is yes)."""
    return Question(path, kind, advanced=True, short=True, group=group, **kw)


ADVANCED_QUESTIONS: tuple[Question, ...] = (
    Q(ADVANCED, Kind.CONFIRM, short=True, propose=fixed(False)),
    # blocks
    adv("ask.block_lr", Kind.CONFIRM, "blocks", propose=any_set_in_base(*LR_WEIGHTS)),
    *(
        adv(path, Kind.TEXT, "blocks", when=wants_block_lr, optional=True, shows_blocks=True,
                 parse=parse_mid_weight if path == "network.mid_lr_weight" else parse_lr_weight,
                 fits=fits_lr_weights(path))
        for path in LR_WEIGHTS
    ),
    adv("network.block_lr_zero_threshold", Kind.FLOAT, "blocks", when=wants_block_lr, shows_blocks=True),
    adv("ask.block_dims", Kind.CONFIRM, "blocks", propose=any_set_in_base(*BLOCK_LIST_FIELDS)),
    *(
        adv(path, Kind.TEXT, "blocks", when=wants_conv_block_dims if "conv" in path else wants("block_dims"),
                 optional=True, shows_blocks=True, parse=parse_number_list, fits=fits_block_list(path))
        for path in BLOCK_LIST_FIELDS
    ),
    adv("network.dim_from_weights", Kind.CONFIRM, "blocks", when=resumes_from_lora),
    # dropouts (and the other regularisers)
    adv("network.dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("network.rank_dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("network.module_dropout", Kind.FLOAT, "dropouts", optional=True),
    adv("optim.scale_weight_norms", Kind.FLOAT, "dropouts", optional=True),
    adv("training.stop_text_encoder_training", Kind.INT, "dropouts"),
    # timesteps and loss
    adv("training.min_timestep", Kind.INT, "timesteps_loss"),
    adv("training.max_timestep", Kind.INT, "timesteps_loss"),
    adv("training.loss_type", Kind.SELECT, "timesteps_loss", choices=tuple(LossType)),
    adv("training.huber_c", Kind.FLOAT, "timesteps_loss", when=not_l2, optional=True),
    adv("training.huber_schedule", Kind.SELECT, "timesteps_loss", when=not_l2, choices=tuple(HuberSchedule)),
    adv("training.debiased_estimation_loss", Kind.CONFIRM, "timesteps_loss"),
    adv("training.v_pred_like_loss", Kind.FLOAT, "timesteps_loss", when=not_v_prediction, optional=True),
    adv("training.zero_terminal_snr", Kind.CONFIRM, "timesteps_loss"),
    adv("training.ip_noise_gamma", Kind.FLOAT, "timesteps_loss", optional=True),
    adv("training.noise_offset_type", Kind.SELECT, "timesteps_loss", choices=tuple(NoiseOffsetType)),
    adv("training.multires_noise_iterations", Kind.INT, "timesteps_loss", when=is_multires,
             propose=base_or("training.multires_noise_iterations", 6)),
    adv("training.multires_noise_discount", Kind.FLOAT, "timesteps_loss", when=is_multires),
    adv("training.adaptive_noise_scale", Kind.FLOAT, "timesteps_loss", when=has_noise_offset, optional=True),
    adv("training.noise_offset_random_strength", Kind.CONFIRM, "timesteps_loss", when=has_noise_offset),
    adv("dataset.weighted_captions", Kind.CONFIRM, "timesteps_loss"),
    # saving
    adv("saving.save_every_n_steps", Kind.INT, "saving", optional=True),
    adv("saving.save_last_n_steps", Kind.INT, "saving", when=is_set("saving.save_every_n_steps"), optional=True),
    adv("saving.save_last_n_epochs", Kind.INT, "saving", when=is_set("saving.save_every_n_epochs"),
             optional=True),
    adv("saving.save_model_as", Kind.SELECT, "saving", choices=tuple(SaveFormat)),
    adv("saving.save_precision", Kind.SELECT, "saving", choices=tuple(SavePrecision)),
    adv("saving.save_state", Kind.CONFIRM, "saving"),
    adv("saving.save_last_n_epochs_state", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.save_last_n_steps_state", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.save_state_every_n_minutes", Kind.INT, "saving", when=saves_state, optional=True),
    adv("saving.no_metadata", Kind.CONFIRM, "saving"),
    adv("logging.tensorboard", Kind.CONFIRM, "saving"),
    adv("logging.log_dir", Kind.DIR, "saving", when=logs_to_tensorboard, optional=True, parse=clean_path),
    adv("logging.log_prefix", Kind.TEXT, "saving", when=is_set("logging.log_dir"), optional=True),
    # performance
    adv("optim.gradient_checkpointing", Kind.CONFIRM, "performance"),
    adv("optim.gradient_accumulation_steps", Kind.INT, "performance"),
    adv("optim.full_fp16", Kind.CONFIRM, "performance", when=uses_fp16),
    adv("optim.full_bf16", Kind.CONFIRM, "performance", when=uses_bf16),
    adv("dataset.cache_latents_to_disk", Kind.CONFIRM, "performance", when=caches_latents),
    adv("dataset.vae_batch_size", Kind.INT, "performance", when=caches_latents),
    adv("dataset.max_data_loader_n_workers", Kind.INT, "performance"),
    adv("dataset.persistent_data_loader_workers", Kind.CONFIRM, "performance"),
    adv("model.attention", Kind.SELECT, "performance", choices=tuple(Attention)),
)
