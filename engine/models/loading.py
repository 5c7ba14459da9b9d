"""Loading a base model offline: the built-in tiny models, diffusers folders and single files.

Nothing here ever reaches for a hub. A single-file (A1111/CompVis) checkpoint carries weights but
no architecture, so its family is detected from its keys (detect.py) and the architecture comes
from a config-only diffusers folder shipped in engine/assets/model_configs (the real SD1.5,
SD2.1-base, SD2.1 768-v and SDXL-base configs). Each component is then converted by diffusers'
single-file loader with `config=<that folder>` and `local_files_only=True`, which a round trip
measured to be bit-exact and network-free. Tokenizers always come from the shipped CLIP files.

diffusers leaves a parameter on the meta device, without a word, when the file lacks it; every
loaded component is checked for that, so a wrong or partial file fails here, not mid-training.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

from engine.config.schema import ModelFamily
from engine.errors import ModelError
from engine.models.checkpoint_file import load_state_dict
from engine.models.components import BaseComponents
from engine.models.detect import (
    Detection,
    detect_folder,
    family_from_keys,
    resolve_family,
    short_name,
)
from engine.models.prediction import (
    Prediction,
    decide,
    prediction_of_folder,
    prediction_of_keys,
)
from engine.models.tokenizer import EOS_PAD, OPENCLIP_PAD, load_clip_tokenizer

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "assets" / "model_configs"

#: spec -> family of the built-in tiny models (random weights from a fixed seed)
BUILTIN_MODELS: dict[str, ModelFamily] = {
    "builtin:demo": ModelFamily.SD1,
    "builtin:tiny-sd1": ModelFamily.SD1,
    "builtin:tiny-sd2": ModelFamily.SD2,
    "builtin:tiny-sdxl": ModelFamily.SDXL,
}


@dataclass(frozen=True, slots=True)
class TextEncoderSlot:
    subfolder: str  # the diffusers component name
    with_projection: bool  # SDXL's second encoder feeds its pooled, projected output to the UNet
    pad_token: str


TEXT_ENCODERS: dict[ModelFamily, tuple[TextEncoderSlot, ...]] = {
    ModelFamily.SD1: (TextEncoderSlot("text_encoder", False, EOS_PAD),),
    ModelFamily.SD2: (TextEncoderSlot("text_encoder", False, OPENCLIP_PAD),),
    ModelFamily.SDXL: (
        TextEncoderSlot("text_encoder", False, EOS_PAD),
        TextEncoderSlot("text_encoder_2", True, OPENCLIP_PAD),
    ),
}


def shipped_config_dir(family: ModelFamily, v_parameterization: bool = False) -> Path:
    """The shipped config-only diffusers folder for a family (SD2: 768-v or 512-base)."""
    names = {
        ModelFamily.SD1: "sd15",
        ModelFamily.SD2: "sd2_768_v" if v_parameterization else "sd2_512",
        ModelFamily.SDXL: "sdxl_base",
    }
    if family not in names:
        raise ValueError(f"no shipped config for family {family!r}; resolve AUTO first")
    return CONFIG_ROOT / names[family]


def load_base_model(
    spec: str,
    family: ModelFamily = ModelFamily.AUTO,
    vae: Path | None = None,
    v_parameterization: bool | None = None,
    config_dir: Path | None = None,
    dtype: Any = None,
) -> BaseComponents:
    """Load a base model: "builtin:demo" (or builtin:tiny-sd1/-sd2/-sdxl), a diffusers folder, or
    a single .safetensors/.ckpt checkpoint in the original (LDM) layout.

    `family` AUTO detects it; anything else must agree with the detection. `vae` replaces the
    model's VAE with the one in that file (LDM or diffusers key layout). `config_dir` (single files
    only) gives the architecture instead of the shipped folder, e.g. for a non-standard model.
    `dtype` (a torch dtype) is what the weights are loaded as; None keeps the file's.
    `v_parameterization`: the config's word on the objective; None lets the model say
    (engine/models/prediction.py), and `BaseComponents.v_prediction` holds the answer.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede the first diffusers import
    if config_dir is not None and (spec.startswith("builtin:") or Path(spec).expanduser().is_dir()):
        raise ValueError("config_dir only applies to single-file checkpoints")
    if spec.startswith("builtin:"):
        components = _load_builtin(spec, family, dtype)
        found = Prediction(False, "the built-in tiny models predict epsilon")
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            components = _load_folder(path, family, dtype)
            found = prediction_of_folder(path)
        elif path.is_file():
            components, found = _load_single_file(path, family, v_parameterization, config_dir, dtype)
        else:
            raise ModelError(
                f"base model {path} does not exist; give a .safetensors/.ckpt file, a diffusers "
                f"folder or one of {', '.join(BUILTIN_MODELS)}"
            )
    if vae is not None:
        components.vae = load_vae_file(Path(vae), like=components.vae, dtype=dtype)
        components.notes.append(f"VAE replaced by {vae}")
    decided = decide(v_parameterization, found, components.unet)
    components.v_prediction = bool(decided.v)
    components.notes.append(f"trains with {'v-prediction' if decided.v else 'epsilon prediction'}: {decided.evidence}")
    return components


def _load_builtin(spec: str, requested: ModelFamily, dtype: Any) -> BaseComponents:
    from engine.models.tiny import build_demo, build_tiny

    if spec not in BUILTIN_MODELS:
        raise ModelError(f"unknown built-in model {spec!r}; choose one of {', '.join(BUILTIN_MODELS)}")
    family = resolve_family(requested, Detection(BUILTIN_MODELS[spec], "built in"), spec)
    components = build_demo() if spec == "builtin:demo" else build_tiny(family)
    components.source = spec
    components.notes.append(f"{spec}: a tiny {short_name(family)} model with random weights (demo and tests)")
    if dtype is not None:
        for module in (components.unet, components.vae, *components.text_encoders):
            module.to(dtype=dtype)
    return components


def _tokenizers(family: ModelFamily) -> list[Any]:
    return [load_clip_tokenizer(slot.pad_token) for slot in TEXT_ENCODERS[family]]


def _encoder_class(slot: TextEncoderSlot):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel


# --- diffusers folders ---------------------------------------------------------------------------


def _load_folder(path: Path, requested: ModelFamily, dtype: Any) -> BaseComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    found = detect_folder(path)
    family = resolve_family(requested, found, path)
    unet = _from_pretrained(UNet2DConditionModel, path, "unet", dtype)
    vae = _from_pretrained(AutoencoderKL, path, "vae", dtype)
    encoders = [_from_pretrained(_encoder_class(s), path, s.subfolder, dtype) for s in TEXT_ENCODERS[family]]
    return BaseComponents(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=_tokenizers(family),
        source=str(path),
        notes=[f"detected {short_name(family)} from {found.evidence}"],
    )


def _from_pretrained(cls, root: Path, subfolder: str, dtype: Any):
    folder = root / subfolder
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder / 'config.json'} is missing: the diffusers folder {root} is incomplete")
    # transformers 5 calls it dtype, diffusers torch_dtype
    dtype_arg = {"torch_dtype": dtype} if cls.__module__.startswith("diffusers") else {"dtype": dtype}
    try:
        model, info = cls.from_pretrained(
            str(root),
            subfolder=subfolder,
            local_files_only=True,
            variant=_weights_variant(folder),
            output_loading_info=True,
            **dtype_arg,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"could not load {folder}: {_first_line(err)}") from err
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ModelError(
            f"{folder} lacks {len(missing)} of the weights its config.json needs "
            f"(e.g. {', '.join(sorted(missing)[:3])}); the folder is incomplete or its config does not "
            "match its weights"
        )
    model.eval()
    return model


def _weights_variant(folder: Path) -> str | None:
    """None when plain weight files exist, else the variant of the ones there (e.g. "fp16")."""
    weights = [p.name for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin"))]
    if not weights or any(name.count(".") == 1 for name in weights):
        return None
    return min(name.split(".")[-2].split("-")[0] for name in weights)


# --- single files --------------------------------------------------------------------------------


def _load_single_file(
    path: Path, requested: ModelFamily, v_parameterization: bool | None, config_dir: Path | None, dtype: Any
) -> tuple[BaseComponents, Prediction]:
    """The components, and what the file's keys say of its objective. The architecture of SD2's
    768-v and 512-base configs is the same (they differ in the sample size and in upcasting
    attention, which torch's SDPA kernels do not use), so an SD2 file whose objective is tested
    only once its U-Net is loaded loads with either."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    state = load_state_dict(path)
    found = family_from_keys(state, path)
    family = resolve_family(requested, found, path)
    prediction = prediction_of_keys(state, family)
    v = v_parameterization if v_parameterization is not None else prediction.v
    root = Path(config_dir) if config_dir is not None else shipped_config_dir(family, bool(v))
    notes = [f"detected {short_name(family)} from {found.evidence} in {path.name}"]
    if config_dir is not None:
        notes.append(f"architecture from {root}")

    # each loader is called with config=<folder> and subfolder=<component>
    common = {"local_files_only": True, "torch_dtype": dtype}
    unet = _single_file_component(partial(UNet2DConditionModel.from_single_file, state, **common), root, "unet", path)
    vae = _single_file_component(partial(AutoencoderKL.from_single_file, state, **common), root, "vae", path)
    encoders = [
        # the text-encoder half of diffusers' pipeline-level from_single_file (transformers
        # models have no from_single_file of their own)
        _single_file_component(
            partial(create_diffusers_clip_model_from_ldm, _encoder_class(slot), state, **common),
            root,
            slot.subfolder,
            path,
        )
        for slot in TEXT_ENCODERS[family]
    ]
    components = BaseComponents(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=_tokenizers(family),
        source=str(path),
        notes=notes,
    )
    return components, prediction


_CHECKPOINT_HINT = "check model.family, or download the checkpoint again"


def _single_file_component(
    load, root: Path, subfolder: str, path: Path, against: str | None = None, hint: str = _CHECKPOINT_HINT
):
    """Run one diffusers single-file loader; turn its failures and any weight it silently left
    unloaded into a ModelError. `against` names the architecture in messages."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    config_file = root / subfolder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{config_file} is missing: {root} is not a complete config folder")
    against = against or str(config_file)
    try:
        model = load(config=str(root), subfolder=subfolder)
    except (SingleFileComponentError, ValueError, RuntimeError, KeyError, OSError) as err:
        raise ModelError(f"the {subfolder} weights in {path} do not fit {against} ({_why(err)}); {hint}") from err
    empty = [name for name, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if empty:
        raise ModelError(
            f"{path} lacks {len(empty)} of the {subfolder} weights that {against} needs "
            f"(e.g. {', '.join(empty[:3])}): the file is incomplete or of another architecture; {hint}"
        )
    model.eval()
    return model


# --- VAE override --------------------------------------------------------------------------------


def load_vae_file(path: Path, like: Any, dtype: Any = None):
    """A VAE from a .safetensors/.ckpt file (LDM or diffusers key layout), with the architecture of
    `like` (the base model's VAE). Used for model.vae."""
    from diffusers import AutoencoderKL

    if not path.is_file():
        raise ModelError(f"model.vae: {path} does not exist; give a VAE .safetensors/.ckpt file or leave it empty")
    state = load_state_dict(path)
    with tempfile.TemporaryDirectory(prefix="lora-wizard-vae-") as tmp:
        # from_single_file takes the architecture from a folder; write the base VAE's config there
        like.save_config(Path(tmp) / "vae")

        load = partial(AutoencoderKL.from_single_file, state, local_files_only=True, torch_dtype=dtype or like.dtype)
        return _single_file_component(
            load,
            Path(tmp),
            "vae",
            path,
            against="the base model's VAE",
            hint="model.vae must be a VAE for this model family (or leave it empty)",
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# diffusers' shape-mismatch error ends in advice (ignore_mismatched_sizes) that is wrong for a user
_SHAPE_MISMATCH = re.compile(r"because (\S+) expected shape torch.Size\((\[.*?\])\), but got torch.Size\((\[.*?\])\)")


def _why(err: BaseException) -> str:
    found = _SHAPE_MISMATCH.search(str(err))
    if found:
        name, expected, got = found.groups()
        return f"{name} should have shape {expected} but has {got}"
    return _first_line(err)
