"""The rulebook: every rule a training config must keep, in one module, run in one call.

`check(cfg, facts)` returns every problem of a config at once. Without `facts` it checks the
config on its own (what a loaded file or the wizard's draft can be checked for); with them it also
checks the config against what preflight knows: the base model's family (read from its header or
folder), the machine (a CUDA GPU or not, the optional packages installed), the process count, and
the paths the run will read and write. Preflight (`replay`, `queue`, `--dry-run`), the loader and
the wizard all call it, so a config that passed its checks trains; the training code asserts what
the rulebook guaranteed instead of finding it out after the model has loaded.

A rule never changes a value. An ERROR stops the run before it starts; a WARNING trains, and says
what happens instead of what the config asked for (xformers on a machine without CUDA trains with
torch's SDPA attention, the same math). Problems become lines through `engine.problems.render`, the same for every caller.

Pure: no torch, no model loading; the filesystem rules only look at paths (`Path.exists`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from engine.config.context_rules import machine_rules, path_rules
from engine.config.defaults import ADAPTIVE, USUAL_LR, suggested_learning_rate
from engine.config.machine import Facts, family_of, v_prediction_of
from engine.config.schema import (
    LossType,
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    NoiseOffsetType,
    Optimizer,
    TrainConfig,
)
from engine.network.blocks import block_problems
from engine.problems import Level, Problem

#: the polynomial schedule's end learning rate when optim.lr_scheduler_args gives none (sd-scripts
#: and transformers' get_polynomial_decay_schedule_with_warmup: lr_end=1e-7, absolute)
POLYNOMIAL_LR_END = 1e-7


# ---- what preflight knows ----------------------------------------------------------------------


# ---- the rules ---------------------------------------------------------------------------------

Rule = Callable[[TrainConfig, "Facts | None"], Iterator[Problem]]


def check(cfg: TrainConfig, facts: Facts | None = None) -> list[Problem]:
    """Every problem of `cfg`, errors and warnings, in the order of the config's sections."""
    return [problem for rule in RULES for problem in rule(cfg, facts)]


def _dataset(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    ds = cfg.dataset
    yield from _folders(ds)
    if ds.cache_latents and (ds.color_aug or ds.random_crop):
        which = " and ".join(n for n in ("color_aug", "random_crop") if getattr(ds, n))
        yield Problem(
            f"dataset.{which}",
            "changes the pixels every time an image is used, so it cannot work with cached latents",
            "set dataset.cache_latents=false (slower), or turn the augmentation off",
        )
    if ds.cache_latents_to_disk and not ds.cache_latents:
        yield Problem("dataset.cache_latents_to_disk", "needs dataset.cache_latents=true", "turn one on or the other off")
    if ds.min_bucket_reso > ds.max_bucket_reso:
        yield Problem(
            "dataset.min_bucket_reso",
            f"is larger than dataset.max_bucket_reso ({ds.max_bucket_reso})",
            "lower it or raise max_bucket_reso",
            ds.min_bucket_reso,
        )
    width, height = ds.width_height
    if not ds.enable_bucket:
        # the resolution is then the one bucket; with buckets it only sets their area (sd-scripts'
        # make_bucket_resolutions), so any size is fine. An odd bucket trains (sd-scripts has no
        # such rule either): the U-Net resizes its feature maps where a side does not halve evenly.
        for problem in resolution_problems(ds.resolution, ds.bucket_reso_steps):
            yield replace(problem, problem=problem.problem + " (it trains, but the model's grid does not fit it)",
                          level=Level.WARNING)
    if ds.enable_bucket and not ds.bucket_no_upscale and max(width, height) > ds.max_bucket_reso:
        yield Problem(
            "dataset.max_bucket_reso",
            f"must be at least the largest side of dataset.resolution ({max(width, height)})",
            f"set it to {max(width, height)} or more",
            ds.max_bucket_reso,
        )
    family = family_of(cfg, facts)
    if family == ModelFamily.SDXL and ds.bucket_reso_steps % 32:
        yield Problem(
            "dataset.bucket_reso_steps",
            "SDXL needs a multiple of 32 (its UNet halves the latent three times; sd-scripts refuses other steps too)",
            "use 32 or 64",
            ds.bucket_reso_steps,
        )


def _folders(ds) -> Iterator[Problem]:
    """The images come from one place: the parent folder of <repeats>_<name> folders, or the list."""
    if ds.subsets and ds.img_folder is not None:
        yield Problem(
            "dataset.img_folder",
            "and dataset.subsets both name the images",
            "keep one: the parent folder of <repeats>_<name> folders, or the list of folders (then set img_folder to null)",
            ds.img_folder,
        )
    if ds.subsets and ds.reg_img_folder is not None:
        yield Problem(
            "dataset.reg_img_folder",
            "is not used with dataset.subsets",
            "list the regularisation folders in dataset.subsets with is_reg: true",
            str(ds.reg_img_folder),
        )
    if not ds.subsets and ds.img_folder is None:
        yield Problem("dataset.subsets", "no images: neither dataset.img_folder nor dataset.subsets is set", "set one of them")
    if ds.subsets and all(s.is_reg for s in ds.subsets):
        yield Problem("dataset.subsets", "lists regularisation folders only", "add a folder of training images (is_reg: false)")


def resolution_problems(resolution: int | tuple[int, int], steps: int) -> Iterator[Problem]:
    """Each side of the training resolution is a whole number of bucket steps."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    for side_name, side in (("width", width), ("height", height)):
        if side % steps:
            yield Problem(
                "dataset.resolution",
                f"the {side_name} {side} is not a multiple of dataset.bucket_reso_steps ({steps})",
                f"use {nearest_multiple(side, steps)}",
                resolution,
            )


def nearest_multiple(value: int, step: int) -> int:
    return max(step, round(value / step) * step)


def _network(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    net = cfg.network
    if net.type == NetworkType.LOCON and net.conv_dim is None:
        yield Problem("network.conv_dim", "network.type=locon needs the rank of the 3x3 convs", "set it, e.g. 8")
    if net.type == NetworkType.LORA and (net.conv_dim is not None or net.conv_alpha is not None):
        yield Problem(
            "network.conv_dim",
            "network.conv_dim/conv_alpha are used by LoCon only",
            "set network.type=locon or clear them",
            net.conv_dim,
        )
    if net.conv_alpha is not None and net.conv_dim is None:
        yield Problem("network.conv_alpha", "needs network.conv_dim", "set conv_dim or clear conv_alpha", net.conv_alpha)
    if net.dim_from_weights and net.network_weights is None:
        yield Problem(
            "network.dim_from_weights",
            "needs network.network_weights (the LoRA to read the ranks from)",
            "set network_weights or turn it off",
            True,
        )
    if net.lokr_factor != -1 and net.type != NetworkType.LOKR:
        yield Problem("network.lokr_factor", "is used by LoKr networks only", "set network.type=lokr or leave it at -1", net.lokr_factor)
    if net.type in (NetworkType.LOHA, NetworkType.LOKR) and net.dropout:
        yield Problem(
            "network.dropout",
            f"is not available for network.type={net.type.value} (LyCORIS has no neuron dropout for it)",
            "clear it, or use network.rank_dropout / network.module_dropout",
            net.dropout,
        )
    family = family_of(cfg, facts)
    if family is not None:
        yield from block_problems(net, family)


def _optim(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    opt = cfg.optim
    warms = opt.lr_warmup_ratio > 0 or bool(opt.lr_warmup_steps)
    if opt.lr_warmup_ratio > 0 and opt.lr_warmup_steps is not None:
        yield Problem(
            "optim.lr_warmup_steps",
            f"and optim.lr_warmup_ratio ({opt.lr_warmup_ratio:g}) both set the warm-up",
            "keep one: a number of steps, or a share of the steps",
            opt.lr_warmup_steps,
        )
    if opt.lr_scheduler in (LrScheduler.CONSTANT, LrScheduler.ADAFACTOR) and warms:
        yield Problem(
            "optim.lr_scheduler",
            "has no warmup",
            "use constant_with_warmup, or set the warm-up (optim.lr_warmup_ratio / lr_warmup_steps) to 0"
            if opt.lr_scheduler == LrScheduler.CONSTANT
            else "set the warm-up to 0 (Adafactor's own step size warms up with warmup_init=True)",
            opt.lr_scheduler,
        )
    yield from _adafactor(opt)
    allowed = {"lr_end"} if opt.lr_scheduler == LrScheduler.POLYNOMIAL else set()
    for key, value in opt.lr_scheduler_args.items():
        where = f"optim.lr_scheduler_args.{key}"
        if key not in allowed:
            takes = ", ".join(sorted(allowed)) or "no extra arguments (its settings are config fields)"
            yield Problem(where, f"the {opt.lr_scheduler.value} schedule takes {takes}", "remove it", value)
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            yield Problem(where, "must be a positive number", "give one, e.g. 1e-7", value)
    if opt.lr_scheduler == LrScheduler.POLYNOMIAL:
        lr_end = opt.lr_scheduler_args.get("lr_end", POLYNOMIAL_LR_END)
        if isinstance(lr_end, (int, float)) and not isinstance(lr_end, bool) and lr_end >= opt.learning_rate:
            yield Problem(
                "optim.lr_scheduler_args.lr_end",
                f"the polynomial schedule decays from optim.learning_rate ({opt.learning_rate:g}) down to lr_end, "
                "so lr_end must be smaller",
                f"set lr_end below {opt.learning_rate:g} (e.g. {opt.learning_rate / 100:g}) or raise the learning rate",
                lr_end,
            )
    yield from learning_rate_problems(opt.optimizer, opt.learning_rate, opt.unet_lr, opt.text_encoder_lr)
    if opt.full_fp16 and opt.full_bf16:
        yield Problem("optim.full_fp16", "optim.full_fp16 and optim.full_bf16 exclude each other", "keep one", True)
    if opt.full_fp16 and opt.mixed_precision != MixedPrecision.FP16:
        yield Problem("optim.full_fp16", "needs optim.mixed_precision=fp16", "set it, or turn full_fp16 off", True)
    if opt.full_bf16 and opt.mixed_precision != MixedPrecision.BF16:
        yield Problem("optim.full_bf16", "needs optim.mixed_precision=bf16", "set it, or turn full_bf16 off", True)


def _adafactor(opt) -> Iterator[Problem]:
    """The adafactor schedule is Adafactor's own step size (relative_step=True); with it the
    optimizer ignores any other schedule (sd-scripts switches to it then, train_util.get_optimizer)."""
    relative = opt.optimizer == Optimizer.ADAFACTOR and str(opt.optimizer_args.get("relative_step", False)).lower() == "true"
    if opt.lr_scheduler == LrScheduler.ADAFACTOR and not relative:
        yield Problem(
            "optim.lr_scheduler",
            "the adafactor schedule is Adafactor's own step size: it needs optim.optimizer=AdaFactor with "
            "optim.optimizer_args relative_step=true",
            "set both, or pick another schedule",
            opt.lr_scheduler,
        )
    if relative and opt.lr_scheduler != LrScheduler.ADAFACTOR:
        yield Problem(
            "optim.optimizer_args.relative_step",
            f"makes Adafactor set its own step size, so the {opt.lr_scheduler.value} schedule would do nothing",
            "set optim.lr_scheduler=adafactor, or relative_step=false for a fixed learning rate",
            True,
        )


def learning_rate_problems(
    optimizer: Optimizer, learning_rate: float, unet_lr: float | None = None, text_encoder_lr: float | None = None
) -> Iterator[Problem]:
    """A learning rate far outside what the optimizer is used with trains, but rarely well: a
    warning (the wizard asks to confirm it)."""
    usual = USUAL_LR[optimizer]
    suggestion = suggested_learning_rate(optimizer)
    why = " (it sets its own step size)" if optimizer in ADAPTIVE else ""
    for where, lr in (("optim.learning_rate", learning_rate), ("optim.unet_lr", unet_lr), ("optim.text_encoder_lr", text_encoder_lr)):
        if lr is not None and lr not in usual:
            yield Problem(
                where,
                f"is far outside the usual range for {optimizer.value}{why}, {usual.low:g} to {usual.high:g}",
                f"{optimizer.value} usually trains well at about {suggestion:g}",
                lr,
                Level.WARNING,
            )


def _training(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    tr = cfg.training
    if tr.max_steps and tr.max_train_epochs:
        yield Problem(
            "training.max_train_epochs",
            f"is overridden by training.max_steps ({tr.max_steps}): a config trains its step count when it has one",
            "clear one of them (sd-scripts would train the epochs)",
            tr.max_train_epochs,
            Level.WARNING,
        )
    if tr.min_timestep >= tr.max_timestep:
        yield Problem(
            "training.min_timestep",
            f"must be below training.max_timestep ({tr.max_timestep}): timesteps are drawn in [min, max)",
            "lower it or raise max_timestep",
            tr.min_timestep,
        )
    multires = tr.noise_offset_type == NoiseOffsetType.MULTIRES
    if not multires and tr.multires_noise_iterations:
        yield Problem(
            "training.multires_noise_iterations",
            "is set but training.noise_offset_type is 'original'",
            "set noise_offset_type=multires (and noise_offset=0), or set the iterations to 0",
            tr.multires_noise_iterations,
        )
    if multires and tr.noise_offset:
        yield Problem(
            "training.noise_offset",
            "training.noise_offset_type=multires uses multires noise only",
            "set noise_offset to 0",
            tr.noise_offset,
        )
    if multires and not tr.multires_noise_iterations:
        yield Problem(
            "training.multires_noise_iterations",
            "training.noise_offset_type=multires needs it",
            "set it (6-10 is usual)",
            tr.multires_noise_iterations,
        )
    if tr.adaptive_noise_scale is not None and not tr.noise_offset:
        yield Problem("training.adaptive_noise_scale", "needs training.noise_offset", "set noise_offset or clear it", tr.adaptive_noise_scale)
    if tr.noise_offset_random_strength and not tr.noise_offset:
        yield Problem("training.noise_offset_random_strength", "needs training.noise_offset", "set noise_offset or turn it off", True)
    if tr.v_pred_like_loss is not None and v_prediction_of(cfg, facts):
        yield Problem(
            "training.v_pred_like_loss",
            "adds a v-prediction-like term to an epsilon model's loss; this model trains with v-prediction",
            "clear it",
            tr.v_pred_like_loss,
        )
    if tr.huber_c is not None and tr.loss_type == LossType.L2:
        yield Problem(
            "training.huber_c",
            "is used by the huber and smooth_l1 losses only",
            "set training.loss_type or clear huber_c",
            tr.huber_c,
        )


def _saving(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    sv = cfg.saving
    if sv.save_last_n_epochs and not sv.save_every_n_epochs:
        yield Problem("saving.save_last_n_epochs", "needs saving.save_every_n_epochs", "set that too, or clear it", sv.save_last_n_epochs)
    if sv.save_last_n_steps and not sv.save_every_n_steps:
        yield Problem("saving.save_last_n_steps", "needs saving.save_every_n_steps", "set that too, or clear it", sv.save_last_n_steps)
    for name in ("save_last_n_epochs_state", "save_last_n_steps_state", "save_state_every_n_minutes"):
        value = getattr(sv, name)
        if value and not sv.save_state:
            yield Problem(f"saving.{name}", "needs saving.save_state=true", "set save_state, or clear it", value)


def _sampling(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    sp = cfg.sampling
    if (sp.sample_every_n_epochs or sp.sample_every_n_steps) and sp.sample_prompts is None:
        yield Problem(
            "sampling.sample_prompts",
            "sampling.sample_every_n_* is set but there are no prompts",
            "give a text file of prompts (or a list of prompt lines), or clear sample_every_n_*",
        )
    if sp.sample_prompts is not None and not (sp.sample_every_n_epochs or sp.sample_every_n_steps):
        yield Problem(
            "sampling.sample_prompts",
            "is set but nothing says when to sample",
            "set sample_every_n_epochs or sample_every_n_steps",
            sp.sample_prompts if isinstance(sp.sample_prompts, list) else str(sp.sample_prompts),
        )
    if isinstance(sp.sample_prompts, list) and not any(line.strip() for line in sp.sample_prompts):
        yield Problem("sampling.sample_prompts", "holds no prompt", "give at least one prompt line", sp.sample_prompts)


def _model(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    """The objective against what the model's files say; what the model family implies for the
    text encoder settings (warnings: it trains)."""
    said, known = cfg.model.v_parameterization, None if facts is None else facts.v_prediction
    if said is not None and known is not None and said != known:
        what = "v-prediction" if known else "epsilon prediction"
        yield Problem(
            "model.v_parameterization",
            f"the model's own files say it was trained with {what}",
            f"set it to {'true' if known else 'false'}, or remove it to follow the model",
            said,
        )
    family = family_of(cfg, facts)
    clip_skip = cfg.model.clip_skip
    if family == ModelFamily.SD2 and clip_skip != 1:
        yield Problem(
            "model.clip_skip",
            "is ignored for SD2: its text encoder is already read at the penultimate layer it was trained with",
            "set it to 1 to say so (the LoRA file records 1)",
            clip_skip,
            Level.WARNING,
        )
    if family == ModelFamily.SDXL and clip_skip not in (1, 2):
        yield Problem(
            "model.clip_skip",
            "is ignored for SDXL: it always uses the penultimate layers",
            "remove it",
            clip_skip,
            Level.WARNING,
        )


RULES: tuple[Rule, ...] = (_model, _dataset, _network, _optim, _training, _saving, _sampling, machine_rules, path_rules)
