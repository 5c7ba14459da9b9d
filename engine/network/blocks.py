"""Block-wise LoRA settings: block numbering, LR-weight presets and lists, their checks, and what
they make of a network (ranks per module, optimizer groups per block LR).

The block numbering is kohya-ss/sd-scripts' (`networks/lora.py`: `get_block_index`,
`get_block_lr_weight`, `get_block_dims_and_alphas`), so block lists written for sd-scripts or the
kohya_ss GUI mean the same blocks here:

* SD1/SD2, 25 blocks: IN00-IN11 (0-11), M00 (12), OUT00-OUT11 (13-24), the LDM `input_blocks`,
  `middle_block` and `output_blocks`. Our names use the diffusers layout, so down block i, layer j
  is 1 + 3i + j and its downsampler 1 + 3i + 2 (up blocks: 13 + 3i + j, upsampler 13 + 3i + 2).
  IN00 (conv_in) never holds a LoRA module.
* SDXL, 23 blocks: 0 (time/label embedding, no LoRA), IN00-IN08 (1-9), M00-M02 (10-12),
  OUT00-OUT08 (13-21), 22 (the final out layers, no LoRA). SDXL names already use the SGM layout
  (`input_blocks_4_1_...`), so the index is read straight from the name.

LR weights: `down`/`up` are a preset (`cosine`, `sine`, `linear`, `reverse_linear`, `zeros`, each
with an optional `+<offset>`) or a list; `mid` a number or a list. A short list is padded with 1.0
(as sd-scripts pads them); a long one is an error, where sd-scripts silently cuts it.
A block whose weight is at or below `block_lr_zero_threshold` gets weight 0 and no LoRA modules.

Pure Python without torch, so the wizard can show a block table without loading it; the network
parts take the network's modules and parameters as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.config.schema import ModelFamily, NetworkConfig
from engine.errors import ConfigError
from engine.problems import Problem

if TYPE_CHECKING:
    from engine.network.inject import LoraNetwork, RankFn

SD_DOWN_UP, SD_MID = 12, 1  # sd-scripts LoRANetwork.NUM_OF_BLOCKS / NUM_OF_MID_BLOCKS
SDXL_DOWN_UP, SDXL_MID = 9, 3  # SDXL_NUM_OF_BLOCKS / SDXL_NUM_OF_MID_BLOCKS

PRESETS: dict[str, Callable[[int, int], float]] = {
    # value of block i of n (i = 0 is the shallowest), before the "+offset"; sd-scripts' formulas
    "cosine": lambda i, n: math.sin(math.pi * ((n - 1 - i) / (n - 1)) / 2),
    "sine": lambda i, n: math.sin(math.pi * (i / (n - 1)) / 2),
    "linear": lambda i, n: i / (n - 1),
    "reverse_linear": lambda i, n: (n - 1 - i) / (n - 1),
    "zeros": lambda i, n: 0.0,
}
_PRESET = re.compile(r"^\s*([a-z_]+)\s*(?:\+\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?\s*$")

_SD_UPDOWN = re.compile(r"^lora_unet_(down|up)_blocks_(\d+)_(resnets|attentions|downsamplers|upsamplers)_(\d+)_")
_SDXL_BLOCK = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")

BlockValue = str | float | Sequence[float] | None


def _is_sdxl(family: ModelFamily) -> bool:
    if family == ModelFamily.SDXL:
        return True
    if family in (ModelFamily.SD1, ModelFamily.SD2):
        return False
    raise ValueError(f"block settings need a concrete model family, got {family!r}")


def block_counts(family: ModelFamily) -> tuple[int, int]:
    """(down or up blocks, mid blocks) of the lr weight lists: SD1/SD2 (12, 1), SDXL (9, 3)."""
    return (SDXL_DOWN_UP, SDXL_MID) if _is_sdxl(family) else (SD_DOWN_UP, SD_MID)


def block_count(family: ModelFamily) -> int:
    """Entries of a block_dims/block_alphas list: 25 for SD1/SD2, 23 for SDXL."""
    down_up, mid = block_counts(family)
    return 2 * down_up + mid + (2 if _is_sdxl(family) else 0)


def block_labels(family: ModelFamily) -> list[str]:
    """A name per block index, as the kohya_ss GUI and block-weight tools write them."""
    down_up, mid = block_counts(family)
    labels = [f"IN{i:02d}" for i in range(down_up)] + [f"M{i:02d}" for i in range(mid)]
    labels += [f"OUT{i:02d}" for i in range(down_up)]
    return ["BASE", *labels, "OUT"] if _is_sdxl(family) else labels


def block_index(lora_name: str, family: ModelFamily) -> int | None:
    """The block of a U-Net LoRA module (see the module docstring); None for a text-encoder module.

    A U-Net name outside the known blocks is a ValueError: it would mean a U-Net of another shape
    than SD1/SD2/SDXL, for which block lists have no meaning.
    """
    if not lora_name.startswith("lora_unet_"):
        return None
    if _is_sdxl(family):
        if m := _SDXL_BLOCK.match(lora_name):
            part, n = m[1], int(m[2])
            index, limit = {"input_blocks": (1 + n, 9), "middle_block": (10 + n, 12), "output_blocks": (13 + n, 21)}[part]
            if index <= limit:
                return index
    else:
        if lora_name.startswith("lora_unet_mid_block_"):
            return SD_DOWN_UP
        if m := _SD_UPDOWN.match(lora_name):
            i, part, j = int(m[2]), m[3], int(m[4])
            sampler = part in ("downsamplers", "upsamplers")
            within = 2 if sampler else j  # three LDM blocks per level: 2 layers (+1 up) and the sampler
            if m[1] == "down" and (sampler or j < 2):
                index = 1 + 3 * i + within
                if index < SD_DOWN_UP:
                    return index
            elif m[1] == "up" and within <= 2:
                index = SD_DOWN_UP + 1 + 3 * i + within
                if index <= 2 * SD_DOWN_UP:
                    return index
    raise ValueError(f"{lora_name} lies outside the {block_count(family)} blocks of a {family.value} U-Net")


# ---- LR weights ------------------------------------------------------------------------------------


def preset_weights(text: str, count: int, *, field: str = "block weights") -> list[float]:
    """`count` weights from a preset such as "cosine" or "cosine+0.2" (sd-scripts' formulas)."""
    m = _PRESET.match(text)
    if not m or m[1] not in PRESETS:
        raise ConfigError(
            f"{field}={text!r} is not a preset: use one of {', '.join(PRESETS)} (optionally with "
            f"+offset, e.g. cosine+0.2) or a list of numbers"
        )
    offset = float(m[2]) if m[2] else 0.0
    return [PRESETS[m[1]](i, count) + offset for i in range(count)]


def parse_block_values(value: BlockValue, count: int, *, field: str, presets: bool = True) -> list[float] | None:
    """A preset, a comma-separated string or a list -> a list of floats (None stays None).

    Lengths are not checked here. An empty item ("1,,1") is an error: sd-scripts reads it as 0.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")]
        if len(items) == 1 and presets and items[0] and not is_number(items[0]):
            return preset_weights(items[0], count, field=field)
        if any(not s for s in items):
            raise ConfigError(f"{field}={value!r} has an empty item: write every value (0 for none)")
        bad = [s for s in items if not is_number(s)]
        if bad:
            raise ConfigError(f"{field}={value!r}: {bad[0]!r} is not a number")
        return [float(s) for s in items]
    return [float(v) for v in value]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _padded(values: list[float] | None, count: int, field: str, family: ModelFamily) -> list[float]:
    if values is None:
        return [1.0] * count
    if len(values) > count:
        raise ConfigError(
            f"{field} has {len(values)} values but a {family.value} U-Net has {count} such blocks: "
            f"remove {len(values) - count}"
        )
    return values + [1.0] * (count - len(values))


def uses_block_lr(net_cfg: NetworkConfig) -> bool:
    return any(v is not None for v in (net_cfg.down_lr_weight, net_cfg.mid_lr_weight, net_cfg.up_lr_weight))


def lr_weights(
    down: BlockValue, mid: BlockValue, up: BlockValue, family: ModelFamily, *, zero_threshold: float = 0.0
) -> list[float]:
    """One LR multiplier per block (25 for SD1/SD2, 23 for SDXL), in block-index order.

    Unset parts are 1.0; short lists are padded with 1.0; too long ones are a ConfigError naming the
    count. SDXL's blocks 0 and 22 hold no LoRA and stay 1.0 (as sd-scripts). Weights at or below
    `zero_threshold` become 0 (those blocks get no modules).
    """
    down_up, n_mid = block_counts(family)
    parts = [
        _padded(parse_block_values(down, down_up, field="network.down_lr_weight"), down_up, "network.down_lr_weight", family),
        _padded(parse_block_values(mid, n_mid, field="network.mid_lr_weight", presets=False), n_mid, "network.mid_lr_weight", family),
        _padded(parse_block_values(up, down_up, field="network.up_lr_weight"), down_up, "network.up_lr_weight", family),
    ]
    weights = [w if w > zero_threshold else 0.0 for part in parts for w in part]
    return [1.0, *weights, 1.0] if _is_sdxl(family) else weights


def config_lr_weights(net_cfg: NetworkConfig, family: ModelFamily) -> list[float]:
    """`lr_weights` of a network config (all 1.0 when no block weight is set)."""
    return lr_weights(
        net_cfg.down_lr_weight,
        net_cfg.mid_lr_weight,
        net_cfg.up_lr_weight,
        family,
        zero_threshold=net_cfg.block_lr_zero_threshold,
    )


# ---- per-block rank lists ------------------------------------------------------------------------

BLOCK_LISTS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")


def block_list_problems(name: str, values: Sequence[float], family: ModelFamily) -> list[Problem]:
    """Problems of one block_dims/block_alphas/conv_block_* list: its length, negative values."""
    out = []
    count = block_count(family)
    labels = block_labels(family)
    if len(values) != count:
        out.append(
            Problem(
                f"network.{name}",
                f"has {len(values)} values but a {family.value} U-Net has {count} blocks ({labels[0]} ... {labels[-1]})",
                f"give exactly {count}",
                list(values),
            )
        )
    if any(v < 0 for v in values):
        out.append(Problem(f"network.{name}", "has a negative value", "use 0 for a block without LoRA", list(values)))
    return out


def block_problems(net_cfg: NetworkConfig, family: ModelFamily) -> list[Problem]:
    """What is wrong with the config's block settings for this model family (empty: fine)."""
    out = []
    for name in BLOCK_LISTS:
        values = getattr(net_cfg, name)
        if values is not None:
            out += block_list_problems(name, values, family)
    if (net_cfg.conv_block_dims is not None or net_cfg.conv_block_alphas is not None) and net_cfg.conv_dim is None:
        out.append(
            Problem(
                "network.conv_block_dims",
                "conv_block_dims/conv_block_alphas set the LoCon 3x3 part per block",
                "set network.type=locon with a network.conv_dim, or clear them",
            )
        )
    try:
        config_lr_weights(net_cfg, family)
    except ConfigError as err:
        out.append(Problem("network", str(err), "fix the block LR weights"))
    return out


def block_network_args(net_cfg: NetworkConfig) -> dict[str, str]:
    """The block settings as sd-scripts records them in ss_network_args (its `--network_args` strings:
    presets as written, lists comma-separated); only the settings that are set."""

    def text(value) -> str:
        if isinstance(value, str):
            return value
        values = value if isinstance(value, (list, tuple)) else [value]
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    args = {}
    for name in ("down_lr_weight", "mid_lr_weight", "up_lr_weight", *BLOCK_LISTS):
        value = getattr(net_cfg, name)
        if value is not None:
            args[name] = text(value)
    if net_cfg.block_lr_zero_threshold:
        args["block_lr_zero_threshold"] = text(net_cfg.block_lr_zero_threshold)
    return args


# ---- per-block ranks of a network ---------------------------------------------------------------


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
