"""Block-wise LoRA settings applied to a network: per-block ranks and alphas, zero blocks, block LRs.

The block numbering, presets and list checks live in `engine.block_weights` (pure, torch-free, also
used by the wizard) and are re-exported here; this module adds what needs the network:
`block_rank_for` (a `rank_for` for `create_network`) and `block_param_groups` (optimizer groups).
Formulas and numbering follow kohya-ss/sd-scripts `networks/lora.py`; see `engine.block_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.block_weights import (
    BLOCK_LISTS,
    PRESETS,
    block_count,
    block_counts,
    block_index,
    block_labels,
    block_list_problems,
    block_network_args,
    block_problems,
    config_lr_weights,
    lr_weights,
    parse_block_values,
    preset_weights,
    uses_block_lr,
)
from engine.config import ModelFamily, NetworkConfig
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.network.inject import LoraNetwork, RankFn

__all__ = [
    "BLOCK_LISTS",
    "PRESETS",
    "block_count",
    "block_counts",
    "block_index",
    "block_labels",
    "block_list_problems",
    "block_network_args",
    "block_param_groups",
    "block_problems",
    "block_rank_for",
    "config_lr_weights",
    "lr_weights",
    "parse_block_values",
    "preset_weights",
    "uses_block_lr",
]


def block_rank_for(net_cfg: NetworkConfig, family: ModelFamily, default_rank_for: RankFn) -> RankFn:
    """A `rank_for` for `create_network` that applies block_dims/block_alphas (Linear and 1x1 layers),
    conv_block_dims/conv_block_alphas (3x3 layers) and the LR weights' zero blocks.

    A U-Net module in a block with LR weight 0, or with rank 0 in its block list, gets no module
    (None). Text-encoder modules, and the parts without a block list, use `default_rank_for`.
    An unset alpha list means network.alpha (conv: conv_alpha, else 1.0, as sd-scripts).
    """
    from engine.network.names import LayerKind, layer_kind

    problems = block_problems(net_cfg, family)
    if problems:  # the rulebook refuses these before a run starts; a direct caller gets the same words
        raise ConfigError("; ".join(map(str, problems)))
    weights = config_lr_weights(net_cfg, family)
    conv_alpha = 1.0 if net_cfg.conv_alpha is None else net_cfg.conv_alpha

    def rank_for(name: str, module) -> tuple[int, float] | None:
        index = block_index(name, family)
        if index is None:
            return default_rank_for(name, module)
        if weights[index] == 0:
            return None
        if layer_kind(module) == LayerKind.CONV:
            dims, alphas, dim, alpha = net_cfg.conv_block_dims, net_cfg.conv_block_alphas, net_cfg.conv_dim, conv_alpha
        else:
            dims, alphas, dim, alpha = net_cfg.block_dims, net_cfg.block_alphas, net_cfg.dim, net_cfg.alpha
        if dims is None and alphas is None:
            return default_rank_for(name, module)
        if dim is None:  # a 3x3 layer of a network without LoCon (block_problems refuses conv lists then)
            return None
        rank = dim if dims is None else dims[index]
        if rank == 0:
            return None
        return rank, float(alpha if alphas is None else alphas[index])

    return rank_for


# ---- optimizer groups ------------------------------------------------------------------------------


def block_param_groups(
    network: LoraNetwork,
    unet_lr: float,
    text_encoder_lr: float | Sequence[float],
    weights: Sequence[float],
    family: ModelFamily,
) -> list[dict]:
    """Optimizer groups with block LRs: the text-encoder groups of `network.param_groups`, then one
    U-Net group per distinct LR (unet_lr x block weight), named after its blocks.

    sd-scripts makes one group per block; grouping equal LRs gives the same updates with fewer
    groups. Groups with LR 0 are left out (as sd-scripts: those modules do not train).
    """
    if len(weights) != block_count(family):
        raise ValueError(f"{len(weights)} block weights for a {family.value} U-Net of {block_count(family)} blocks")
    groups = [g for g in network.param_groups(unet_lr=0.0, text_encoder_lr=text_encoder_lr) if g["name"] != "unet"]
    labels = block_labels(family)
    by_lr: dict[float, tuple[list[str], list]] = {}
    for module in network.unet_loras:
        index = block_index(module.lora_name, family)
        lr = unet_lr * weights[index]
        blocks, params = by_lr.setdefault(lr, ([], []))
        if labels[index] not in blocks:
            blocks.append(labels[index])
        params.extend(module.parameters())
    for lr, (blocks, params) in by_lr.items():
        if lr != 0:
            groups.append({"name": f"unet_{'_'.join(blocks)}", "lr": lr, "params": params, "blocks": blocks})
    return groups
