"""Which layers get a LoRA, and their kohya names.

A kohya name is a prefix (`lora_unet`, `lora_te`, `lora_te1`, `lora_te2`) joined to the layer's
dotted module path with every "." turned into "_". The module selection and the names follow
kohya-ss/sd-scripts `networks/lora.py`, so our files load
wherever kohya files load (A1111, ComfyUI, Forge, diffusers `load_lora_weights`):

* U-Net: every Linear / Conv2d inside a `Transformer2DModel` (attention q/k/v/out, feed-forward,
  proj_in/proj_out). LoCon adds the ones inside `ResnetBlock2D`, `Downsample2D`, `Upsample2D`:
  their 3x3 convs take the conv rank, their Linear (`time_emb_proj`) and 1x1 (`conv_shortcut`) the
  linear rank.
* Text encoders: every Linear inside the CLIP attention and MLP blocks.
* SD1/SD2 U-Net names use the diffusers module path (`down_blocks_0_attentions_0_...`); SDXL names
  use the SGM/LDM layout (`input_blocks_4_1_...`), because sd-scripts trains SDXL on its own
  SGM-shaped U-Net. `sgm_module_path` maps one to the other.
* Text-encoder names always read `text_model_...`: transformers 5's `CLIPTextModel` dropped that
  level, `CLIPTextModelWithProjection` kept it, and the files must look the same either way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from torch import nn

from engine.config.schema import ModelFamily

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
SDXL_TE_PREFIXES = ("lora_te1", "lora_te2")

UNET_TRANSFORMER_CLASSES = frozenset({"Transformer2DModel"})
UNET_LOCON_CLASSES = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
# transformers 4 named its attention class after the kernel; transformers 5 has one CLIPAttention
TE_CLASSES = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP"})

# diffusers ResnetBlock2D child -> the SGM ResBlock child (sd-scripts sdxl_model_util)
_SGM_RESNET_CHILDREN = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


class LayerKind(StrEnum):
    LINEAR = "linear"
    CONV1X1 = "conv1x1"  # treated like a Linear: takes the linear rank
    CONV = "conv"  # any other kernel (3x3): takes the LoCon conv rank


@dataclass(frozen=True)
class Target:
    """One layer that gets a LoRA module."""

    name: str  # kohya name, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
    path: str  # dotted path inside its model (diffusers/transformers layout)
    module: nn.Module
    kind: LayerKind


def kohya_name(prefix: str, module_path: str) -> str:
    return f"{prefix}_{module_path}".replace(".", "_")


def layer_kind(module: nn.Module) -> LayerKind | None:
    if isinstance(module, nn.Linear):
        return LayerKind.LINEAR
    if isinstance(module, nn.Conv2d):
        return LayerKind.CONV1X1 if tuple(module.kernel_size) == (1, 1) else LayerKind.CONV
    return None


def _layers_inside(root: nn.Module, classes: frozenset[str]) -> list[tuple[str, nn.Module, LayerKind]]:
    """(path, layer, kind) of every Linear/Conv2d inside a module whose class name is in `classes`.

    Matching by class name (as sd-scripts does) keeps this independent of where diffusers and
    transformers define those classes. A layer reachable under two names is taken once, under the
    first name.
    """
    found: list[tuple[str, nn.Module, LayerKind]] = []
    seen: set[int] = set()
    for parent_path, parent in root.named_modules():
        if type(parent).__name__ not in classes:
            continue
        for child_path, child in parent.named_modules():
            kind = layer_kind(child)
            if kind is None or id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{parent_path}.{child_path}" if parent_path else child_path
            found.append((path, child, kind))
    return found


def _single_layers_per_block(value: int | Sequence[int]) -> int:
    if isinstance(value, int):
        return value
    values = set(value)
    if len(values) != 1:
        raise ValueError(f"layers_per_block differs between blocks ({list(value)}); the SGM layout needs one value")
    return values.pop()


_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _resnet_child(rest: str, path: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in _SGM_RESNET_CHILDREN:
        raise ValueError(f"no SGM name for resnet layer {path!r}")
    return _SGM_RESNET_CHILDREN[head] + (f".{tail}" if tail else "")


def sgm_module_path(path: str, *, layers_per_block: int, up_block_has_attention: Sequence[bool]) -> str:
    """Map a diffusers U-Net module path to the SGM/LDM layout that SDXL LoRA names use.

    With L = `layers_per_block` (2 for the real SDXL), down block i holds input_blocks
    1+i(L+1) .. 1+i(L+1)+L-1 and its downsampler is input_blocks (i+1)(L+1); up block i holds
    output_blocks i(L+1) .. i(L+1)+L and its upsampler sits in the last of those, after the
    attention when the block has one. `up_block_has_attention[i]` says whether up block i has
    attentions. Example (L=2): down_blocks.1.attentions.0.proj_in -> input_blocks.4.1.proj_in.
    """
    per = layers_per_block + 1
    if m := _DOWN.match(path):
        i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if part == "downsamplers":
            if rest != "conv":
                raise ValueError(f"no SGM name for downsampler layer {path!r}")
            return f"input_blocks.{(i + 1) * per}.0.op"
        index = 1 + i * per + j
        if part == "resnets":
            return f"input_blocks.{index}.0.{_resnet_child(rest, path)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := _UP.match(path):
        i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if part == "upsamplers":
            slot = 2 if up_block_has_attention[i] else 1
            return f"output_blocks.{i * per + layers_per_block}.{slot}.{rest}"
        index = i * per + j
        if part == "resnets":
            return f"output_blocks.{index}.0.{_resnet_child(rest, path)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := _MID.match(path):
        part, j, rest = m[1], int(m[2]), m[3]
        if part == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * j}.{_resnet_child(rest, path)}"
    raise ValueError(f"no SGM name for U-Net module {path!r} (only down/mid/up block layers have one)")


def unet_targets(unet: nn.Module, family: ModelFamily, *, locon: bool) -> list[Target]:
    """The U-Net layers that get a LoRA (LoCon adds the resnet/down/upsample layers), kohya-named."""
    classes = UNET_TRANSFORMER_CLASSES | (UNET_LOCON_CLASSES if locon else frozenset())
    layers = _layers_inside(unet, classes)
    if family == ModelFamily.SDXL:
        config = unet.config
        lpb = _single_layers_per_block(config.layers_per_block)
        has_attention = ["CrossAttn" in t for t in config.up_block_types]

        def to_name(path: str) -> str:
            return kohya_name(
                UNET_PREFIX, sgm_module_path(path, layers_per_block=lpb, up_block_has_attention=has_attention)
            )
    elif family in (ModelFamily.SD1, ModelFamily.SD2):

        def to_name(path: str) -> str:
            return kohya_name(UNET_PREFIX, path)
    else:
        raise ValueError(f"unet_targets needs a concrete model family, got {family!r}")
    return _unique([Target(to_name(path), path, module, kind) for path, module, kind in layers])


def text_encoder_prefixes(family: ModelFamily) -> tuple[str, ...]:
    """Name prefixes of the family's text encoders, in `BaseComponents.text_encoders` order."""
    if family == ModelFamily.SDXL:
        return SDXL_TE_PREFIXES
    if family in (ModelFamily.SD1, ModelFamily.SD2):
        return (TE_PREFIX,)
    raise ValueError(f"text_encoder_prefixes needs a concrete model family, got {family!r}")


def text_encoder_targets(text_encoder: nn.Module, prefix: str) -> list[Target]:
    """The CLIP attention/MLP Linears of one text encoder, named `<prefix>_text_model_encoder_...`."""
    targets = []
    for path, module, kind in _layers_inside(text_encoder, TE_CLASSES):
        if kind != LayerKind.LINEAR:
            continue
        # transformers 5 CLIPTextModel: "encoder.layers.0..."; with a projection: "text_model.encoder..."
        named_path = path if path.startswith("text_model.") else f"text_model.{path}"
        targets.append(Target(kohya_name(prefix, named_path), path, module, kind))
    return _unique(targets)


def _unique(targets: list[Target]) -> list[Target]:
    counts = Counter(t.name for t in targets)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
        raise ValueError(f"two layers map to the same LoRA name: {duplicates[:5]}")
    return targets
