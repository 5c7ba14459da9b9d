"""The questions in the order users of LoRA_Easy_Training_Scripts know (its first wizard, commit d14b240),
with the B2 questions that fit our engine (network type and LoCon conv rank, mixed precision, latent
caching, min-SNR gamma) and without the LETS bugs: AdamW really selects AdamW, the training comment
is kept, "don't save every epoch" leaves the option unset instead of passing 999999, warmup is asked
only for schedulers that have one. Then, as LETS did, sample images (a prompt file or one prompt
typed in, the sampler, every how many epochs). The wording of every question lives in
prompts/<lang>.toml under the question's `path`; this module holds no user-facing text."""

from __future__ import annotations

from engine.config.schema import (
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    Optimizer,
    Sampler,
    TagFile,
    TrainOn,
)
from wizard.checks import (
    check_base_model,
    check_dataset,
    check_file,
    check_json_file,
    check_output_folder,
    check_reg_folder,
    clean_path,
    parse_resolution,
    parse_sample_prompt,
)
from wizard.draft import ASK, Kind, Question
from wizard.predicates import (
    any_caption_dropout_in_base,
    base_or,
    clip_skip_if_not_realistic,
    family_detail,
    family_if_not_sd2,
    first_caption,
    fixed,
    half_of,
    has_conv_dim,
    is_polynomial,
    is_sd2,
    is_set_in_base,
    learning_rate_far_off,
    learning_rate_for_optimizer,
    likely_family,
    parent_folder_offer,
    precision_for_machine,
    resolution_fits_buckets,
    resolution_for_family,
    same_as,
    samples_by_default,
    scheduler_has_warmup,
    uses_conv_layers,
    uses_restarts,
    v_prediction_proposal,
    wants,
    wants_warmup,
)

#: asked before everything else; a "yes" loads a saved config and switches to the short list
LOAD_QUESTIONS: tuple[Question, ...] = (
    Question(f"{ASK}load_json", Kind.CONFIRM, propose=fixed(False)),
    Question(f"{ASK}load_path", Kind.FILE, propose=fixed(""), parse=clean_path, check=check_json_file),
)

Q = Question
LETS_QUESTIONS: tuple[Question, ...] = (
    Q("model.base_model", Kind.FILE, short=True, parse=clean_path, check=check_base_model),
    Q("dataset.img_folder", Kind.DIR, short=True, parse=clean_path, check=check_dataset, corrects=parent_folder_offer),
    Q("saving.output_folder", Kind.DIR, short=True, parse=clean_path, check=check_output_folder),
    Q("model.lowram", Kind.CONFIRM, short=True),
    Q("optim.optimizer", Kind.SELECT, short=True, choices=tuple(Optimizer)),
    Q("model.family", Kind.CONFIRM, short=True, yes=ModelFamily.SD2, no=family_if_not_sd2,
      propose=likely_family, detail=family_detail),
    Q("model.clip_skip", Kind.CONFIRM, short=True, yes=1, no=clip_skip_if_not_realistic),
    Q("model.v_parameterization", Kind.CONFIRM, short=True, when=is_sd2, propose=v_prediction_proposal),
    Q(f"{ASK}reg_images", Kind.CONFIRM, short=True, propose=is_set_in_base("dataset.reg_img_folder")),
    Q("dataset.reg_img_folder", Kind.DIR, short=True, when=wants("reg_images"), parse=clean_path,
      check=check_reg_folder, corrects=parent_folder_offer),
    Q(f"{ASK}resume_lora", Kind.CONFIRM, short=True, propose=is_set_in_base("network.network_weights")),
    Q("network.network_weights", Kind.FILE, short=True, when=wants("resume_lora"), parse=clean_path,
      check=check_file),
    Q("dataset.flip_aug", Kind.CONFIRM, short=True),
    Q("training.batch_size", Kind.INT),
    Q("training.epochs", Kind.INT),
    Q("network.dim", Kind.INT),
    Q("network.alpha", Kind.FLOAT, propose=half_of("network.dim")),
    Q("network.type", Kind.SELECT, choices=tuple(NetworkType)),
    Q("network.conv_dim", Kind.INT, when=uses_conv_layers, optional=True, propose=base_or("network.conv_dim", 32)),
    Q("network.conv_alpha", Kind.FLOAT, when=has_conv_dim, propose=same_as("network.conv_dim")),
    Q("dataset.resolution", Kind.TEXT, parse=parse_resolution, follows=resolution_for_family,
      fits=resolution_fits_buckets),
    Q("optim.learning_rate", Kind.FLOAT, follows=learning_rate_for_optimizer,
      confirm=learning_rate_far_off("optim.learning_rate")),
    Q("optim.text_encoder_lr", Kind.FLOAT, optional=True, confirm=learning_rate_far_off("optim.text_encoder_lr")),
    Q("optim.unet_lr", Kind.FLOAT, optional=True, confirm=learning_rate_far_off("optim.unet_lr")),
    # the adafactor schedule needs Adafactor's relative_step argument, which the wizard does not ask
    Q("optim.lr_scheduler", Kind.SELECT, choices=tuple(s for s in LrScheduler if s != LrScheduler.ADAFACTOR)),
    Q("optim.lr_scheduler_num_cycles", Kind.INT, when=uses_restarts),
    Q("optim.lr_scheduler_power", Kind.FLOAT, when=is_polynomial),
    Q(f"{ASK}save_every", Kind.CONFIRM, propose=is_set_in_base("saving.save_every_n_epochs")),
    Q("saving.save_every_n_epochs", Kind.INT, when=wants("save_every"),
      propose=base_or("saving.save_every_n_epochs", 1)),
    Q("dataset.shuffle_caption", Kind.CONFIRM),
    Q(f"{ASK}keep_tokens", Kind.CONFIRM, propose=is_set_in_base("dataset.keep_tokens")),
    Q("dataset.keep_tokens", Kind.INT, when=wants("keep_tokens"), propose=base_or("dataset.keep_tokens", 1)),
    Q(f"{ASK}warmup", Kind.CONFIRM, when=scheduler_has_warmup, propose=is_set_in_base("optim.lr_warmup_ratio")),
    Q("optim.lr_warmup_ratio", Kind.FLOAT, when=wants_warmup, propose=base_or("optim.lr_warmup_ratio", 0.05)),
    Q(f"{ASK}output_name", Kind.CONFIRM, short=True, propose=is_set_in_base("saving.output_name")),
    Q("saving.output_name", Kind.TEXT, short=True, when=wants("output_name"),
      propose=base_or("saving.output_name", "")),
    Q("saving.training_comment", Kind.TEXT, short=True, optional=True),
    Q("network.train_on", Kind.SELECT, short=True, choices=tuple(TrainOn)),
    Q("saving.tag_file", Kind.SELECT, short=True, choices=tuple(TagFile)),
    Q(f"{ASK}caption_dropout", Kind.CONFIRM, short=True, propose=any_caption_dropout_in_base),
    Q("dataset.caption_dropout_rate", Kind.FLOAT, short=True, when=wants("caption_dropout"),
      propose=base_or("dataset.caption_dropout_rate", 0.05)),
    Q("dataset.caption_dropout_every_n_epochs", Kind.INT, short=True, when=wants("caption_dropout")),
    Q("dataset.caption_tag_dropout_rate", Kind.FLOAT, short=True, when=wants("caption_dropout")),
    Q(f"{ASK}noise_offset", Kind.CONFIRM, short=True, propose=is_set_in_base("training.noise_offset")),
    Q("training.noise_offset", Kind.FLOAT, short=True, when=wants("noise_offset"),
      propose=base_or("training.noise_offset", 0.1)),
    Q("dataset.bucket_no_upscale", Kind.CONFIRM),
    Q("optim.mixed_precision", Kind.SELECT, choices=tuple(MixedPrecision), follows=precision_for_machine),
    Q("dataset.cache_latents", Kind.CONFIRM),
    Q(f"{ASK}min_snr", Kind.CONFIRM, propose=is_set_in_base("training.min_snr_gamma")),
    Q("training.min_snr_gamma", Kind.FLOAT, when=wants("min_snr"), propose=base_or("training.min_snr_gamma", 5.0)),
    Q(f"{ASK}samples", Kind.CONFIRM, propose=samples_by_default),
    Q("sampling.sample_prompts", Kind.PROMPTS, when=wants("samples"), propose=first_caption, parse=parse_sample_prompt),
    Q("sampling.sample_sampler", Kind.SELECT, when=wants("samples"), choices=tuple(Sampler)),
    Q("sampling.sample_every_n_epochs", Kind.INT, when=wants("samples"),
      propose=base_or("sampling.sample_every_n_epochs", 1)),
)

# ---- advanced settings ----------------------------------------------------------------------------
# Behind "advanced settings?" (default no), in the groups of the kohya_ss GUI's advanced panel. Block
# lists take a preset or numbers; each answer is checked against the model family's block count and
# the resulting per-block values are shown (wizard/review.block_table).
