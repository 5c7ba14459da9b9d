"""Which Stable Diffusion family a base model is, read from its keys alone.

diffusers' own guess (`infer_diffusers_model_type`) probes tensor shapes of real-sized models and
calls every tiny test model "v1" (its probes assume real tensor sizes), so we look at which text
encoder the file has:

- `conditioner.embedders.1.*`       SDXL (its second encoder, OpenCLIP bigG)
- `cond_stage_model.model.*`        SD2 (OpenCLIP ViT-H)
- `cond_stage_model.transformer.*`  SD1 (OpenAI CLIP ViT-L, stored in the HF layout)

For a .safetensors file only the JSON header is read, with plain Python, so the wizard can call
this without importing torch. Whether an SD2 model predicts v or epsilon is not in the weights:
the user says so with `model.v_parameterization`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.schema import ModelFamily
from engine.errors import ModelError
from engine.models.checkpoint_file import WEIGHT_SUFFIXES, checkpoint_keys


@dataclass(frozen=True, slots=True)
class Detection:
    family: ModelFamily
    evidence: str  # what gave it away, for the user: "conditioner.embedders.1.* keys"


#: checked in this order; the first prefix found decides
KEY_MARKERS: tuple[tuple[str, ModelFamily], ...] = (
    ("conditioner.embedders.1.", ModelFamily.SDXL),
    ("cond_stage_model.model.", ModelFamily.SD2),
    ("cond_stage_model.transformer.", ModelFamily.SD1),
)

_NAMES = {
    ModelFamily.SD1: "Stable Diffusion 1.x",
    ModelFamily.SD2: "Stable Diffusion 2.x",
    ModelFamily.SDXL: "Stable Diffusion XL",
    ModelFamily.AUTO: "read from the model's weights",
}


def describe_family(family: ModelFamily) -> str:
    """A human name: "Stable Diffusion XL"."""
    return _NAMES[family]


def short_name(family: ModelFamily) -> str:
    """The name used in messages: "SDXL"."""
    return family.value.upper()


def detect(path: Path) -> Detection:
    """The family of a .safetensors/.ckpt file or a diffusers folder, with the evidence."""
    path = Path(path)
    if path.is_dir():
        return detect_folder(path)
    if not path.exists():
        raise ModelError(f"base model {path} does not exist; give a .safetensors/.ckpt file or a diffusers folder")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ModelError(
            f"{path} is not a model file: expected a {', '.join(WEIGHT_SUFFIXES)} file or a diffusers folder"
        )
    return family_from_keys(checkpoint_keys(path), path)


def detect_family(path: Path) -> ModelFamily:
    return detect(path).family


def family_from_keys(keys: Iterable[str], path: Path) -> Detection:
    """Decide the family from the tensor names of a single-file (LDM/CompVis layout) checkpoint."""
    keys = list(keys)
    for prefix, family in KEY_MARKERS:
        if any(key.startswith(prefix) for key in keys):
            return Detection(family, f"{prefix}* keys")
    raise ModelError(f"{path} is not a Stable Diffusion 1/2/XL checkpoint: {_what_it_looks_like(keys)}")


def _what_it_looks_like(keys: list[str]) -> str:
    """Best guess at what a file without SD text-encoder keys is, for the error message."""
    if any(key.startswith(("lora_unet_", "lora_te", "lora_te1_", "lora_te2_")) for key in keys):
        return "it is a LoRA/LyCORIS file (lora_unet_* keys), not a base model"
    if any(key.startswith("conditioner.embedders.0.model.") for key in keys):
        return "it looks like the SDXL refiner (one OpenCLIP encoder), which LoRA training does not support"
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return (
            "it has a UNet (model.diffusion_model.*) but no text encoder (cond_stage_model.* or "
            "conditioner.embedders.*); use a full checkpoint, not a UNet-only or pruned one"
        )
    if any(key.startswith(("encoder.", "decoder.", "first_stage_model.")) for key in keys) and not any(
        key.startswith(("down_blocks.", "up_blocks.")) for key in keys
    ):
        return "it looks like a VAE on its own; give it as model.vae and choose a full base model"
    if any(key.startswith(("down_blocks.", "mid_block.", "conv_in.")) for key in keys):
        return "it holds diffusers-layout weights of one component; give the whole diffusers folder instead"
    sample = ", ".join(keys[:3]) or "no tensors at all"
    return f"none of {', '.join(p + '*' for p, _ in KEY_MARKERS)} were found (first keys: {sample})"


def detect_folder(path: Path) -> Detection:
    """The family of a diffusers folder, from model_index.json and the text encoder's config."""
    index = read_json(path / "model_index.json", what="a diffusers model folder")
    components = {name for name, value in index.items() if _is_component(value)}
    missing = [name for name in ("unet", "vae") if name not in components]
    if missing:
        raise ModelError(
            f"{path / 'model_index.json'} lists no {' or '.join(missing)}: "
            "not a Stable Diffusion 1/2/XL pipeline folder"
        )
    if "text_encoder_2" in components:
        if "text_encoder" not in components:
            raise ModelError(
                f"{path} has only text_encoder_2: it looks like the SDXL refiner, which LoRA training does not support"
            )
        return Detection(ModelFamily.SDXL, "model_index.json lists text_encoder_2")
    if "text_encoder" not in components:
        raise ModelError(f"{path / 'model_index.json'} lists no text_encoder: not a Stable Diffusion pipeline folder")
    config_path = path / "text_encoder" / "config.json"
    activation = read_json(config_path, what="a text encoder config").get("hidden_act")
    # OpenAI CLIP (SD1) uses quick_gelu; OpenCLIP (SD2) uses gelu: the sizes differ only at full scale
    if activation == "quick_gelu":
        return Detection(ModelFamily.SD1, "text_encoder/config.json: hidden_act=quick_gelu (OpenAI CLIP)")
    if activation == "gelu":
        return Detection(ModelFamily.SD2, "text_encoder/config.json: hidden_act=gelu (OpenCLIP)")
    raise ModelError(
        f"{config_path} has hidden_act={activation!r}; expected quick_gelu (SD1) or gelu (SD2). "
        "Set model.family to say which it is"
    )


def _is_component(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and value[0] is not None


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"{path} is missing: expected {what} with this file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path} could not be read as JSON ({err}); restore it from the model's download") from err
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object; restore it from the model's download")
    return data


def resolve_family(requested: ModelFamily, found: Detection, source: Path | str) -> ModelFamily:
    """The detected family, or a ModelError when the config names another one."""
    if requested not in (ModelFamily.AUTO, found.family):
        raise ModelError(
            f"config says model.family={requested.value} but {source} is an {short_name(found.family)} "
            f"checkpoint ({found.evidence}): set model.family to {found.family.value} or auto"
        )
    return found.family
