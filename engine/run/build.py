"""The trained parts of a run: the network (LoRA/LoCon, or LoHa/LoKr through LyCORIS), its
optimizer and LR schedule, and the state a resumed run continues from."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.config.schema import (
    ModelFamily,
    NetworkConfig,
    NetworkType,
    TrainConfig,
    TrainOn,
)
from engine.data.plan import RunPlan
from engine.events import Reporter
from engine.network.blocks import (
    BLOCK_LISTS,
    block_param_groups,
    block_rank_for,
    config_lr_weights,
    uses_block_lr,
)
from engine.network.inject import (
    create_network,
    default_rank_for,
    ranks_from_state_dict,
    read_dim_alpha,
)
from engine.network.lora_file import load_lora_file
from engine.run.lr_schedule import make_lambda_scheduler
from engine.run.optim import build_optimizer as make_optimizer
from engine.run.optim import describe_optimizer
from engine.run.state import Position, check_compatible, load_state, read_position


def trains(net: NetworkConfig) -> tuple[bool, bool]:
    """(the U-Net trains, the text encoder trains)."""
    return net.train_on != TrainOn.TEXT_ONLY, net.train_on != TrainOn.UNET_ONLY


def starting_network(cfg: TrainConfig, reporter: Reporter) -> tuple[NetworkConfig, dict | None]:
    """The network settings the run builds with, and the LoRA weights it starts from.

    Starting from a LoRA file (network.network_weights), the file's ranks and alphas win over
    network.dim/alpha when they differ: its weights only fit the shapes they were trained with. The
    user is told; the config itself is not changed (the one saved beside the LoRA is the one given),
    and the network settings used are recorded in the file's metadata.
    """
    net = cfg.network
    if net.network_weights is None:
        return net, None
    state_dict, _ = load_lora_file(net.network_weights)
    dim, alpha, conv_dim, conv_alpha = read_dim_alpha(state_dict)
    file_values = {"dim": dim, "alpha": alpha, "conv_dim": conv_dim, "conv_alpha": conv_alpha}
    differs = {k: v for k, v in file_values.items() if v is not None and getattr(net, k) != v}
    if not differs:
        return net, state_dict
    if not net.dim_from_weights:
        shown = ", ".join(f"network.{k}={getattr(net, k)} -> {v}" for k, v in differs.items())
        reporter.notice(f"{net.network_weights} was trained with other ranks; using the file's: {shown}")
    values = {**net.model_dump(), **differs}
    if conv_dim is not None and net.type == NetworkType.LORA:
        values["type"] = NetworkType.LOCON  # the file has 3x3 conv modules: it is a LoCon
    return NetworkConfig.model_validate(values), state_dict


def uses_block_settings(net: NetworkConfig) -> bool:
    """Any block-wise setting: LR weights (their zero blocks drop modules), the zero threshold, or a block list."""
    return uses_block_lr(net) or net.block_lr_zero_threshold > 0 or any(getattr(net, n) is not None for n in BLOCK_LISTS)


def build_network(cfg: TrainConfig, net: NetworkConfig, model, start_weights: dict | None, acc, weight_dtype, reporter: Reporter):
    """The network applied to the model (its modules patched in), on the device: fp32, or the
    weights' half dtype with full_fp16/full_bf16 (weights, gradients and optimizer state)."""
    from engine.network.lycoris_adapter import create_lycoris_network

    rank_for = ranks_from_state_dict(start_weights) if start_weights is not None else default_rank_for(net)
    if uses_block_settings(net):
        rank_for = block_rank_for(net, model.family, rank_for)
    create = create_lycoris_network if net.type in (NetworkType.LOHA, NetworkType.LOKR) else create_network
    train_unet, train_te = trains(net)
    network = create(model, net, train_unet=train_unet, train_text_encoder=train_te, rank_for=rank_for)
    network.apply()
    if start_weights is not None:
        network.load_weights(start_weights)
        reporter.notice(f"started from the weights of {net.network_weights}")
    half = cfg.optim.full_fp16 or cfg.optim.full_bf16
    network.to(acc.device, dtype=weight_dtype if half else torch.float32)
    return network


def build_optimizer(cfg: TrainConfig, network, plan: RunPlan, family: ModelFamily, acc):
    """(optimizer, LR schedule, ss_optimizer text). Groups: text encoder and U-Net, each at its own
    LR (or per block LR weight). The schedule is not given to accelerate, which would step it once
    per process: one optimizer step is one step of the schedule, whatever the process count."""
    opt = cfg.optim
    unet_lr, te_lr = opt.unet_lr or opt.learning_rate, opt.text_encoder_lr or opt.learning_rate
    if uses_block_lr(cfg.network):
        groups = block_param_groups(network, unet_lr, te_lr, config_lr_weights(cfg.network, family), family)
    else:
        groups = network.param_groups(unet_lr=unet_lr, text_encoder_lr=te_lr)
    optimizer = make_optimizer(opt.optimizer, groups, opt.optimizer_args, lr=opt.learning_rate)
    name = describe_optimizer(optimizer, opt.optimizer, opt.optimizer_args)
    scheduler = make_lambda_scheduler(
        optimizer,
        scheduler=opt.lr_scheduler,
        total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps,
        num_cycles=opt.lr_scheduler_num_cycles,
        power=opt.lr_scheduler_power,
        extra=opt.lr_scheduler_args,
    )
    optimizer = acc.prepare(optimizer)
    if opt.full_fp16:
        _allow_fp16_gradient_unscaling(acc)
    return optimizer, scheduler, name


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


def restore(folder: Path | None, cfg: TrainConfig, plan: RunPlan, network, optimizer, scheduler, acc, reporter: Reporter) -> Position | None:
    """Load a training state (LoRA weights, optimizer, schedule position) and say where the run
    continues; None for a run from the start."""
    if folder is None:
        return None
    start = read_position(folder)
    check_compatible(start, seed=cfg.training.seed, num_processes=acc.num_processes, folder=folder)
    load_state(folder, network, optimizer, scheduler)
    reporter.notice(f"resuming {folder}: epoch {start.epoch}, step {start.step} of {plan.total_steps}")
    return start
