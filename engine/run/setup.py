"""Everything a run sets up once before its first step: devices, model, latents, LoRA, optimizer."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import time
from pathlib import Path

import torch

from engine.config.schema import Attention, MixedPrecision, TrainConfig, TrainOn
from engine.data.latent_disk_cache import LatentDiskCache, LatentRequest
from engine.data.latents import LatentCache, encode_images, load_image
from engine.data.plan import make_plan
from engine.errors import ConfigError, problems_message
from engine.events import Reporter
from engine.problems import errors, warnings
from engine.run.distributed import is_main_process
from engine.run.session import Session


def quiet_heavy_imports() -> None:
    """Offline and quiet before diffusers/transformers load (OFFLINE.md §2, §5)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def make_accelerator(cfg: TrainConfig, reporter: Reporter):
    from accelerate import Accelerator

    precision = cfg.optim.mixed_precision
    if not torch.cuda.is_available():
        precision = MixedPrecision.NO  # mixed precision applies on a GPU (the rulebook says so)
    acc = Accelerator(
        mixed_precision=precision.value,
        gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
        cpu=not torch.cuda.is_available(),
    )
    check_launch(acc.num_processes)
    return acc


def check_launch(num_processes: int) -> None:
    """Refuse processes that were launched together but are not connected (OFFLINE.md §8): each
    would train the whole run on its own, silently duplicating the work and racing on the files."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != num_processes:
        raise ConfigError(
            f"{launched} processes were launched but they are not connected for distributed training "
            f"(this one sees {num_processes}); each would train the whole run on its own. On GPUs use "
            "`accelerate launch --multi_gpu --num_processes N run_wizard.py ...`; without GPUs add "
            "ACCELERATE_USE_CPU=1 to that command"
        )


def weight_dtype_for(precision: str) -> torch.dtype:
    """Frozen base weights are stored in the autocast dtype; the LoRA's own weights stay fp32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def derive_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from the parts (seed, purpose, step, ...): stable across runs."""
    import hashlib

    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class StoppedDuringSetup(Exception):
    """Ctrl-C arrived while the run was still loading or caching: nothing was trained."""


def cache_all_latents(cfg: TrainConfig, plan, vae, reporter: Reporter, stop=None) -> LatentCache:
    """Encode each image the plan uses once (twice with flip_aug), in VAE batches."""
    reporter.phase("caching latents")
    # only the main process writes cache files; the others encode the same latents in memory
    disk = LatentDiskCache(vae) if cfg.dataset.cache_latents_to_disk and is_main_process() else None
    wanted = [(item, flip) for item in plan.items for flip in ((False, True) if cfg.dataset.flip_aug else (False,))]
    latents: dict = {}
    size = cfg.dataset.vae_batch_size
    # batch only images of the same bucket: they share one tensor shape
    by_bucket: dict = {}
    for item, flip in wanted:
        by_bucket.setdefault(item.bucket, []).append((item, flip))
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        for start in range(0, len(group), size):
            if stop is not None and stop.requested:
                raise StoppedDuringSetup
            chunk = group[start : start + size]
            keys = [(item.record.path, flip) for item, flip in chunk]
            generators = [derive_generator(cfg.training.seed, "latents", path, flip) for path, flip in keys]
            if disk is not None:
                requests = [LatentRequest(item.record.path, item.choice, flip) for item, flip in chunk]
                encoded = disk.load_or_encode(requests, generators).cpu()
            else:
                pixels = torch.stack([load_image(item.record.path, item.choice, flip) for item, flip in chunk])
                encoded = encode_images(vae, pixels, generators).cpu()
            for key, latent in zip(keys, encoded):
                latents[key] = latent
    if disk is not None:
        reporter.notice(disk.stats.describe())
    return LatentCache(latents)


def prepare_session(cfg: TrainConfig, run_dir: Path, reporter: Reporter, stop=None):
    from engine.config.schema import NetworkType
    from engine.models.loading import load_base_model
    from engine.network.blocks import block_param_groups, block_rank_for, config_lr_weights, uses_block_lr
    from engine.network.inject import create_network, default_rank_for, ranks_from_state_dict
    from engine.network.lycoris_adapter import create_lycoris_network
    from engine.run.losses import compute_snr
    from engine.run.lr_schedule import make_lambda_scheduler
    from engine.run.metadata import RunFacts, network_args, training_metadata
    from engine.run.noise import ddpm_alphas_cumprod
    from engine.run.optim import build_optimizer, describe_optimizer
    from engine.run.sampling import parse_prompt_file
    from engine.run.saving import write_tag_file
    from engine.run.state import check_compatible, load_state, read_position
    from engine.run.tracking import open_train_log
    from engine.text.cache import build_text_cache

    prompts = parse_prompt_file(cfg.sampling.sample_prompts) if cfg.sampling.sample_prompts else []
    acc = make_accelerator(cfg, reporter)
    plan = make_plan(cfg, acc.num_processes)
    started_at = time.time()
    torch.manual_seed(cfg.training.seed)
    captions = read_captions(plan)

    reporter.phase("loading model")
    model = load_base_model(
        cfg.model.base_model, cfg.model.family, vae=cfg.model.vae, v_parameterization=cfg.model.v_parameterization
    )
    for note in model.notes:
        reporter.notice(note)
    _hold_to_the_rulebook(cfg, model.family, acc.num_processes, reporter)
    weight_dtype = weight_dtype_for(acc.mixed_precision)
    device = acc.device

    train_unet = cfg.network.train_on != TrainOn.TEXT_ONLY
    train_te = cfg.network.train_on != TrainOn.UNET_ONLY
    for module in (model.unet, model.vae, *model.text_encoders):
        module.requires_grad_(False)
        module.eval()
    model.vae.to(device, dtype=torch.float32)
    if cfg.model.lowram:
        _move_to_device_now(model, device, weight_dtype)

    latents = None
    if cfg.dataset.cache_latents:
        latents = cache_all_latents(cfg, plan, model.vae, reporter, stop)
        model.vae.to("cpu")

    model.unet.to(device, dtype=weight_dtype)
    for encoder in model.text_encoders:
        encoder.to(device, dtype=weight_dtype)
    text_cache = build_text_cache(cfg, plan, captions, model, acc, reporter)  # None unless unet_only + fixed captions
    if text_cache is not None:
        for encoder in model.text_encoders:
            encoder.to("cpu")  # the steps read the cache; on the device the encoders would only hold memory
    _set_attention(cfg, model.unet)
    if cfg.optim.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        for encoder in model.text_encoders:
            encoder.gradient_checkpointing_enable()

    cfg, start_weights = _start_weights(cfg, reporter)
    rank_for = ranks_from_state_dict(start_weights) if start_weights is not None else default_rank_for(cfg.network)
    if uses_block_settings(cfg.network):
        rank_for = block_rank_for(cfg.network, model.family, rank_for)
    build = create_lycoris_network if cfg.network.type in (NetworkType.LOHA, NetworkType.LOKR) else create_network
    network = build(model, cfg.network, train_unet=train_unet, train_text_encoder=train_te, rank_for=rank_for)
    network.apply()
    if start_weights is not None:
        network.load_weights(start_weights)
        reporter.notice(f"started from the weights of {cfg.network.network_weights}")
    # full_fp16/full_bf16: the LoRA's own weights, gradients and optimizer state in half precision
    half = cfg.optim.full_fp16 or cfg.optim.full_bf16
    network.to(device, dtype=weight_dtype if half else torch.float32)

    lr = cfg.optim.learning_rate
    unet_lr, te_lr = cfg.optim.unet_lr or lr, cfg.optim.text_encoder_lr or lr
    if uses_block_lr(cfg.network):
        groups = block_param_groups(network, unet_lr, te_lr, config_lr_weights(cfg.network, model.family), model.family)
    else:
        groups = network.param_groups(unet_lr=unet_lr, text_encoder_lr=te_lr)
    optimizer = build_optimizer(cfg.optim.optimizer, groups, cfg.optim.optimizer_args, lr=lr)
    optimizer_name = describe_optimizer(optimizer, cfg.optim.optimizer, cfg.optim.optimizer_args)
    scheduler = make_lambda_scheduler(
        optimizer,
        scheduler=cfg.optim.lr_scheduler,
        total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps,
        num_cycles=cfg.optim.lr_scheduler_num_cycles,
        power=cfg.optim.lr_scheduler_power,
        extra=cfg.optim.lr_scheduler_args,
    )
    # The network is not wrapped in DDP: the LoRA runs inside the UNet's and text encoders' own
    # forward, never through the network's, and DDP only reduces gradients after its forward has
    # run. `Session.average_gradients` does that reduction, in one call per step. The scheduler is
    # not prepared either: accelerate would step it once per process, and one optimizer step here
    # is one step of the schedule whatever the process count.
    optimizer = acc.prepare(optimizer)
    if cfg.optim.full_fp16:
        _allow_fp16_gradient_unscaling(acc)
    start = None
    if cfg.saving.resume is not None:
        start = read_position(cfg.saving.resume)
        check_compatible(start, seed=cfg.training.seed, num_processes=acc.num_processes, folder=cfg.saving.resume)
        load_state(cfg.saving.resume, acc.unwrap_model(network), optimizer, scheduler)
        reporter.notice(
            f"resuming {cfg.saving.resume}: epoch {start.epoch}, step {start.step} of {plan.total_steps}"
        )
    alphas = ddpm_alphas_cumprod(zero_terminal_snr=cfg.training.zero_terminal_snr)
    all_snr = compute_snr(ddpm_alphas_cumprod()).to(device)

    facts = RunFacts(
        family=model.family,
        session_id=random.Random(f"session:{started_at}").randint(0, 2**32),
        started_at=started_at,
        optimizer=optimizer_name,
        tag_frequency=tag_frequency(plan, captions),
        network_args=network_args(cfg),
    )
    extra_files = []
    if acc.is_main_process:
        tag_file = write_tag_file(cfg, captions, run_dir)
        extra_files = [tag_file] if tag_file else []
    return Session(
        cfg=cfg,
        plan=plan,
        run_dir=run_dir,
        accelerator=acc,
        components=model,
        network=network,
        optimizer=optimizer,
        scheduler=scheduler,
        latents=latents,
        alphas_cumprod=alphas,
        all_snr=all_snr,
        weight_dtype=weight_dtype,
        train_unet=train_unet,
        train_text_encoder=train_te,
        captions=captions,
        metadata=training_metadata(cfg, plan, facts),
        reporter=reporter,
        extra_files=extra_files,
        start=start,
        text_cache=text_cache,
        sample_prompts=prompts,
        train_log=open_train_log(cfg, run_dir, is_main_process=acc.is_main_process),
    )


def _start_weights(cfg: TrainConfig, reporter: Reporter):
    """The LoRA to start from (network.network_weights), and the config with its dims.

    The file's ranks and alphas win over network.dim/alpha when they differ (the weights only fit
    the shapes they were trained with); the user is told which values are used.
    """
    from engine.network.inject import read_dim_alpha
    from engine.network.lora_file import load_lora_file

    if cfg.network.network_weights is None:
        return cfg, None
    state_dict, _ = load_lora_file(cfg.network.network_weights)
    dim, alpha, conv_dim, conv_alpha = read_dim_alpha(state_dict)
    file_values = {"dim": dim, "alpha": alpha, "conv_dim": conv_dim, "conv_alpha": conv_alpha}
    net = cfg.network
    differs = {k: v for k, v in file_values.items() if v is not None and getattr(net, k) != v}
    if differs and not net.dim_from_weights:
        shown = ", ".join(f"network.{k}={getattr(net, k)} -> {v}" for k, v in differs.items())
        reporter.notice(f"{net.network_weights} was trained with other ranks; using the file's: {shown}")
    if differs:
        data = cfg.model_dump()
        data["network"].update(differs)
        if conv_dim is not None and data["network"]["type"] == "lora":
            data["network"]["type"] = "locon"
        cfg = TrainConfig.model_validate(data)
    return cfg, state_dict


def read_captions(plan) -> dict[Path, str]:
    """Each image's caption text: its caption file, else its folder's class name."""
    from engine.data.captions import read_caption

    return {
        item.record.path: read_caption(item.record.caption_path, all_lines=item.record.rules.wildcard)
        if item.record.caption_path
        else item.record.class_caption
        for item in plan.items
    }


def tag_frequency(plan, captions: dict[Path, str]) -> dict[str, dict[str, int]]:
    """ss_tag_frequency (engine/run/metadata.py)."""
    from engine.run.metadata import tag_frequency as folders_tag_frequency

    return folders_tag_frequency(plan, captions)


def _move_to_device_now(model, device, weight_dtype) -> None:
    """model.lowram: the UNet and text encoders leave the CPU's memory as soon as they are loaded
    (for machines with more GPU memory than RAM, e.g. Colab). On a CPU they are in RAM either way."""
    if device.type == "cpu":
        return
    model.unet.to(device, dtype=weight_dtype)
    for encoder in model.text_encoders:
        encoder.to(device, dtype=weight_dtype)
    import gc

    gc.collect()


def _allow_fp16_gradient_unscaling(acc) -> None:
    """full_fp16 keeps the LoRA's gradients in fp16; torch's GradScaler refuses to unscale fp16
    gradients unless told to (sd-scripts patches the scaler the same way)."""
    scaler = getattr(acc, "scaler", None)
    if scaler is None:
        return
    original = scaler._unscale_grads_

    def unscale_allowing_fp16(optimizer, inv_scale, found_inf, allow_fp16):
        return original(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale_allowing_fp16


def _hold_to_the_rulebook(cfg: TrainConfig, family, num_processes: int, reporter: Reporter) -> None:
    """The rulebook's verdict once the model's family is known for sure: its warnings are shown in
    the run's log; an error means the run was started without preflight (a direct `train` call),
    and is the same error preflight would have given."""
    from engine.config.machine import this_machine
    from engine.config.rules import Facts, check

    problems = check(cfg, Facts(this_machine(), family, num_processes, paths=False))
    refused = errors(problems)
    if refused:
        raise ConfigError(problems_message("the config breaks these rules", [str(p) for p in refused]))
    for problem in warnings(problems):
        reporter.notice(str(problem))


def _set_attention(cfg: TrainConfig, unet) -> None:
    """xformers where asked for and usable (a CUDA GPU and the package); otherwise diffusers' default,
    torch SDPA (flash / memory-efficient kernels on CUDA), which computes the same attention."""
    if cfg.model.attention != Attention.XFORMERS or not torch.cuda.is_available():
        return
    if importlib.util.find_spec("xformers") is None:
        return
    unet.enable_xformers_memory_efficient_attention()


def uses_block_settings(net) -> bool:
    """Any block-wise setting: LR weights (their zero blocks drop modules), the zero threshold, or a block list."""
    from engine.network.blocks import BLOCK_LISTS, uses_block_lr

    return uses_block_lr(net) or net.block_lr_zero_threshold > 0 or any(getattr(net, n) is not None for n in BLOCK_LISTS)
