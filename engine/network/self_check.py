"""Every saved LoRA checked against the base model it was trained on, as the web UIs will read it.

A1111/Forge and ComfyUI find the layer a kohya module patches by its name: `lora_unet_` plus the
layer's path in the original (LDM) checkpoint layout with "." written "_", or for SD1/SD2 the
diffusers path, which they convert (A1111 `networks.convert_diffusers_name_to_compvis`, ComfyUI
`lora.model_lora_keys_unet`); `lora_te_` (SDXL: `lora_te1_`, `lora_te2_`) plus the transformers
CLIP path of a text-encoder layer, whose OpenCLIP q/k/v are thirds of one fused `in_proj_weight`.
A module whose name matches no layer is skipped by those loaders without a word, which is the
silent failure this check exists for.

The names are built here from the model's own LDM state dict (engine/models/ldm_layout.py, the
inverse of what diffusers reads from single files), not from the code that named the modules
(engine/network/names.py), so a naming mistake there is caught here. For each module the check
wants: a layer of that name, shapes that multiply out to the layer's weight (LoRA and LoCon
`lora_down`/`lora_up`, LoHa `hada_w*`, LoKr `lokr_w*`), its `alpha`, and finite values only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import TrainingError
from engine.models import ldm_layout as ldm

SHOWN = 6  # problems listed in an error message


@dataclass(frozen=True)
class LayerWeight:
    """The base-model weight a kohya module patches."""

    key: str  # its name in the LDM checkpoint layout
    out_features: int
    in_features: int
    kernel: tuple[int, ...]  # () for a Linear, (kh, kw) for a Conv2d


class SelfCheckError(TrainingError):
    """A saved file does not fit the model it was trained on: the run fails, the file is kept."""


# ---------------------------------------------------------------------------------- the name index


class _ShapesOnly:
    """A module whose state_dict holds meta tensors of the same shapes: the LDM conversion then
    costs no memory (OpenCLIP's fused q/k/v would otherwise be concatenated on the GPU)."""

    def __init__(self, module) -> None:
        self._module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.empty(v.shape, device="meta") for k, v in self._module.state_dict().items()}

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def base_weight_index(components) -> dict[str, LayerWeight]:
    """kohya module name -> the weight it patches, for every Linear/Conv2d weight of the U-Net and
    text encoders, under each name the web UIs accept for this family."""
    family = components.family.value
    index: dict[str, LayerWeight] = {}
    shapes = {key: tuple(t.shape) for key, t in components.unet.state_dict().items()}
    for diffusers_key, ldm_key in ldm.unet_ldm_names(_ShapesOnly(components.unet)).items():
        shape = shapes[diffusers_key]
        if not diffusers_key.endswith(".weight") or len(shape) < 2:
            continue
        weight = _weight(ldm.UNET_PREFIX + ldm_key, shape)
        index[_kohya("lora_unet", ldm_key)] = weight
        if family in ("sd1", "sd2"):  # converted by A1111 and ComfyUI; sd-scripts writes these
            index[_kohya("lora_unet", diffusers_key)] = weight
    encoders = [_ShapesOnly(e) for e in components.text_encoders]
    if family == "sd1":
        index.update(_clip_names(ldm.clip_to_ldm(encoders[0], ldm.SD1_TEXT_PREFIX), ldm.SD1_TEXT_PREFIX, "lora_te"))
    elif family == "sd2":
        index.update(_open_clip_names(ldm.open_clip_to_ldm(encoders[0], ldm.SD2_TEXT_PREFIX), ldm.SD2_TEXT_PREFIX, "lora_te"))
    elif family == "sdxl":
        index.update(_clip_names(ldm.clip_to_ldm(encoders[0], ldm.SDXL_TEXT1_PREFIX), ldm.SDXL_TEXT1_PREFIX, "lora_te1"))
        index.update(_open_clip_names(ldm.open_clip_to_ldm(encoders[1], ldm.SDXL_TEXT2_PREFIX), ldm.SDXL_TEXT2_PREFIX, "lora_te2"))
    else:
        raise ValueError(f"unknown model family {family!r}")
    return index


def _kohya(prefix: str, key: str) -> str:
    return f"{prefix}_{key.removesuffix('.weight')}".replace(".", "_")


def _weight(key: str, shape, rows: int | None = None) -> LayerWeight:
    shape = tuple(shape)
    return LayerWeight(key, rows or shape[0], shape[1], shape[2:])


def _clip_names(state: Mapping[str, torch.Tensor], prefix: str, lora_prefix: str) -> dict[str, LayerWeight]:
    """OpenAI CLIP keeps the transformers layout in LDM files: the kohya name is its path."""
    return {
        _kohya(lora_prefix, key[len(prefix) :]): _weight(key, t.shape)
        for key, t in state.items()
        if key.endswith(".weight") and t.ndim >= 2
    }


_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)$")
_OPEN_CLIP_PARTS = {"attn.out_proj.weight": "self_attn_out_proj", "mlp.c_fc.weight": "mlp_fc1", "mlp.c_proj.weight": "mlp_fc2"}


def _open_clip_names(state: Mapping[str, torch.Tensor], prefix: str, lora_prefix: str) -> dict[str, LayerWeight]:
    """OpenCLIP (SD2, SDXL's second encoder): kohya names are the transformers ones, and q/k/v are
    each a third of the fused `attn.in_proj_weight`, as A1111 and ComfyUI split it."""
    out: dict[str, LayerWeight] = {}
    for key, tensor in state.items():
        match = _RESBLOCK.match(key[len(prefix) :])
        if not match:
            continue
        layer, part = match.groups()
        head = f"{lora_prefix}_text_model_encoder_layers_{layer}_"
        if part == "attn.in_proj_weight":
            for name in ("q_proj", "k_proj", "v_proj"):
                out[f"{head}self_attn_{name}"] = _weight(key, tensor.shape, rows=tensor.shape[0] // 3)
        elif part in _OPEN_CLIP_PARTS:
            out[head + _OPEN_CLIP_PARTS[part]] = _weight(key, tensor.shape)
    return out


# ------------------------------------------------------------------------------------ the check


def check_lora_tensors(tensors: Mapping[str, torch.Tensor], index: Mapping[str, LayerWeight]) -> list[str]:
    """Every problem of a LoRA/LoCon/LoHa/LoKr state dict against a base model's index; [] when
    it loads into that model as trained."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, part = key.partition(".")
        modules.setdefault(name, {})[part] = tensor
    problems: list[str] = []
    for name, parts in modules.items():
        weight = index.get(name)
        if weight is None:
            problems.append(f"{name}: no layer of the base model has this name, so A1111/ComfyUI would skip this module")
            continue
        problems += [f"{name}: {p}" for p in module_problems(parts, weight)]
    bad = sorted(k for k, t in tensors.items() if _not_finite(t))
    problems += [f"{key}: holds NaN or Inf values" for key in bad]
    return problems


def _not_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds NaN or Inf. Tested with numpy, single-threaded: torch's reductions on
    fp16 took 0.3 to 1.4 s for an SD1.5 file on a busy 2-core machine (its threads wait for
    each other), numpy 0.04 s. numpy has no bfloat16: there, NaN and Inf are the values whose
    exponent bits are all set."""
    if not tensor.is_floating_point() or tensor.device.type == "meta":
        return False
    flat = tensor.detach().to("cpu").contiguous()
    if flat.dtype == torch.bfloat16:
        bits = flat.view(torch.int16).numpy()
        return bool(((bits & 0x7F80) == 0x7F80).any())
    return not bool(np.isfinite(flat.numpy()).all())


def module_problems(parts: Mapping[str, torch.Tensor], weight: LayerWeight) -> list[str]:
    """One module's tensors against the weight it patches: the delta's shape, and its alpha."""
    problems = []
    if "alpha" not in parts:
        problems.append("has no alpha (loaders would read alpha = rank, another strength than trained)")
    elif parts["alpha"].numel() != 1:
        problems.append(f"alpha has shape {tuple(parts['alpha'].shape)}, not one number")
    if "lora_down.weight" in parts or "lora_up.weight" in parts:
        problems += _lora_problems(parts, weight)
    elif any(p.startswith("hada_") for p in parts):
        problems += _loha_problems(parts, weight)
    elif any(p.startswith("lokr_") for p in parts):
        problems += _lokr_problems(parts, weight)
    else:
        problems.append(f"holds none of the tensors of a LoRA, LoHa or LoKr module ({', '.join(sorted(parts))})")
    return problems


def _flat_in(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])


def _delta_problem(out: int, flat_in: int, weight: LayerWeight) -> list[str]:
    want = weight.in_features * math.prod(weight.kernel)
    if (out, flat_in) == (weight.out_features, want):
        return []
    shape = f"{weight.out_features} out, {weight.in_features} in{_kernel_text(weight.kernel)}"
    return [f"its update is {out}x{flat_in} but the layer {weight.key} is {weight.out_features}x{want} ({shape})"]


def _kernel_text(kernel: tuple[int, ...]) -> str:
    return f", kernel {'x'.join(map(str, kernel))}" if kernel else ""


def _missing(parts: Mapping[str, torch.Tensor], names: tuple[str, ...]) -> list[str]:
    absent = [n for n in names if n not in parts]
    return [f"has no {', '.join(absent)}"] if absent else []


def _lora_problems(parts: Mapping[str, torch.Tensor], weight: LayerWeight) -> list[str]:
    missing = _missing(parts, ("lora_down.weight", "lora_up.weight"))
    if missing:
        return missing
    down, up = tuple(parts["lora_down.weight"].shape), tuple(parts["lora_up.weight"].shape)
    if up[1] != down[0]:
        return [f"lora_up has rank {up[1]} but lora_down has rank {down[0]}"]
    problems = _delta_problem(up[0], _flat_in(down), weight)
    # a 3x3 layer needs a 3x3 lora_down; a Linear or 1x1 layer takes a 2-D or 1x1 one
    if not problems and _square_kernel(down[2:]) != _square_kernel(weight.kernel):
        problems.append(f"lora_down has kernel {down[2:]} but the layer {weight.key} has {weight.kernel or '(Linear)'}")
    return problems


def _square_kernel(kernel: tuple[int, ...]) -> tuple[int, ...]:
    return () if kernel in ((), (1, 1)) else kernel


def _loha_problems(parts: Mapping[str, torch.Tensor], weight: LayerWeight) -> list[str]:
    names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    missing = _missing(parts, names)
    if missing:
        return missing
    w1a, w1b, w2a, w2b = (tuple(parts[n].shape) for n in names)
    if w1a[1] != w1b[0] or w2a[1] != w2b[0] or (w1a[0], _flat_in(w1b)) != (w2a[0], _flat_in(w2b)):
        return [f"its two Hadamard factors do not fit each other ({w1a}@{w1b} vs {w2a}@{w2b})"]
    return _delta_problem(w1a[0], _flat_in(w1b), weight)


def _lokr_factor(parts: Mapping[str, torch.Tensor], which: str) -> tuple[int, int] | None:
    """(rows, flattened columns) of LoKr's factor w1 or w2, whole or as a low-rank product."""
    if which in parts:
        shape = tuple(parts[which].shape)
        return shape[0], _flat_in(shape)
    if f"{which}_a" in parts and f"{which}_b" in parts:
        a, b = tuple(parts[f"{which}_a"].shape), tuple(parts[f"{which}_b"].shape)
        return (a[0], _flat_in(b)) if a[1] == b[0] else None
    return None


def _lokr_problems(parts: Mapping[str, torch.Tensor], weight: LayerWeight) -> list[str]:
    w1, w2 = _lokr_factor(parts, "lokr_w1"), _lokr_factor(parts, "lokr_w2")
    if w1 is None or w2 is None:
        return [f"its Kronecker factors are missing or do not fit ({', '.join(sorted(parts))})"]
    return _delta_problem(w1[0] * w2[0], w1[1] * w2[1], weight)


# ------------------------------------------------------------------------------------- the files


def check_lora_file(path: Path, index: Mapping[str, LayerWeight]) -> list[str]:
    """The problems of a saved LoRA file against a base model's index ([] when it fits)."""
    from engine.network.lora_file import load_lora_file

    tensors, _ = load_lora_file(path)
    return check_lora_tensors(tensors, index)


class SavedFileCheck:
    """The check a run makes after each save: the model's name index is built at the first save
    (a run that never saves builds none) and kept."""

    def __init__(self, components) -> None:
        self.components = components
        self._index: dict[str, LayerWeight] | None = None

    def __call__(self, path: Path) -> None:
        if self._index is None:
            self._index = base_weight_index(self.components)
        problems = check_lora_file(path, self._index)
        if problems:
            raise SelfCheckError(failure_message(path, self.components.source, problems))


def failure_message(path: Path, model: str, problems: list[str]) -> str:
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return (
        f"the saved file {path} does not fit the base model {model} it was trained on: "
        + "; ".join(problems[:SHOWN])
        + more
        + ". The file is kept, but do not use it: A1111/ComfyUI would load it wrongly or not at all "
        "(a name or shape problem is a bug in lora-wizard, please report it; NaN or Inf values mean "
        "the training diverged: lower optim.learning_rate)"
    )
