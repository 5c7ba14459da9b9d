"""What preflight can know about a base model without loading it, and what is wrong with it.

* A diffusers folder: its family from model_index.json and the text encoder's config.
* A `.safetensors` file: its family from the header's tensor names, and whether every tensor the
  family's architecture needs has the shape that architecture gives it. The shapes are in the
  header, so a non-standard, inpainting or damaged file is refused before any run starts instead
  of after the model loaded. The expected names and shapes come from the shipped architecture
  configs, built on torch's meta device (no memory, no weights) and named the LDM way
  (engine/models/ldm_layout.py).
* A pickled `.ckpt`/`.pt`: its pickle is disassembled, never run (Python's `pickletools`). The
  functions it would call are checked against what torch's weights-only loader accepts, so a
  file that carries code is named as such before training (it is not damaged, and loading it
  would be refused); its tensor names, which are plain strings in the pickle, give the family.
* Anything else is not a model file.
"""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from engine.config.schema import ModelFamily, TrainConfig
from engine.errors import ModelError
from engine.models.checkpoint_file import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    WEIGHT_SUFFIXES,
    read_safetensors_header,
)
from engine.models.detect import (
    detect_folder,
    family_from_keys,
    resolve_family,
    short_name,
)
from engine.models.prediction import (
    Prediction,
    prediction_of_folder,
    prediction_of_keys,
)
from engine.problems import Problem

FIELD = "model.base_model"
_SHOWN = 3  # tensor names listed in one problem


@dataclass(frozen=True)
class ModelInspection:
    family: ModelFamily | None  # None when the model could not be read
    problems: list[Problem] = field(default_factory=list)
    evidence: str = ""  # what told the family, for the plan
    prediction: Prediction = Prediction(None, "not read")  # v or epsilon, as far as the files say


def inspect_base_model(cfg: TrainConfig) -> ModelInspection:
    """The family of `cfg.model.base_model` and every problem found in it, without loading it."""
    from engine.models.loading import BUILTIN_MODELS

    spec, requested = cfg.model.base_model, cfg.model.family
    if spec.startswith("builtin:"):
        if spec not in BUILTIN_MODELS:
            return _refused("is not a built-in model", f"choose one of {', '.join(BUILTIN_MODELS)}", spec)
        inspection = _with_family(requested, BUILTIN_MODELS[spec], "built in", spec)
        return replace(inspection, prediction=Prediction(False, "the built-in tiny models predict epsilon"))
    path = Path(spec).expanduser()
    if not path.exists():
        return _refused("does not exist", "give a .safetensors/.ckpt file or a diffusers folder", spec)
    try:
        if path.is_dir():
            found = detect_folder(path)
            inspection = _with_family(requested, found.family, found.evidence, spec)
            return replace(inspection, prediction=prediction_of_folder(path))
        suffix = path.suffix.lower()
        if suffix in SAFETENSORS_SUFFIXES:
            header = read_safetensors_header(path)
            found = family_from_keys((k for k in header if k != "__metadata__"), path)
            inspection = _with_family(requested, found.family, found.evidence, spec)
            misfits = architecture_misfits(header, found.family, bool(cfg.model.v_parameterization))
            problems = inspection.problems + [_problem(m, spec) for m in misfits]
            return ModelInspection(inspection.family, problems, found.evidence, prediction_of_keys(header, found.family))
        if suffix in PICKLE_SUFFIXES:
            return _inspect_pickle(path, requested, spec)
    except ModelError as err:
        return _refused_text(str(err), spec)
    return _refused(
        "is not a model file",
        f"give a {', '.join(WEIGHT_SUFFIXES)} file or a diffusers folder (a .json config is not a model)",
        spec,
    )


def _with_family(requested: ModelFamily, found: ModelFamily, evidence: str, spec: str) -> ModelInspection:
    from engine.models.detect import Detection

    try:
        family = resolve_family(requested, Detection(found, evidence), spec)
    except ModelError as err:
        return ModelInspection(None, [Problem("model.family", str(err), value=requested)], evidence)
    return ModelInspection(family, [], evidence)


def _refused(problem: str, fix: str, spec: str) -> ModelInspection:
    return ModelInspection(None, [Problem(FIELD, problem, fix, spec)])


def _refused_text(text: str, spec: str) -> ModelInspection:
    return ModelInspection(None, [_problem(text, spec)])


def _problem(text: str, spec: str) -> Problem:
    """A model problem whose message already names the file and says what to do."""
    return Problem(FIELD, text, value=spec)


# ---- single .safetensors files: the architecture's names and shapes ------------------------------


def architecture_misfits(header: dict, family: ModelFamily, v_parameterization: bool = False) -> list[str]:
    """Why the tensors of a single-file checkpoint (its safetensors header) do not fit the family's
    architecture: wrong shapes of the tensors it has, and U-Net tensors it lacks. Empty: it fits.

    Only what diffusers' loader would also refuse is reported: tensors the file has beyond the
    architecture (EMA copies, SD2's unused last text layer) are ignored, and a 1x1 conv stored as a
    Linear (or the reverse) is the same weight."""
    from engine.models.loading import shipped_config_dir

    expected = expected_shapes(shipped_config_dir(family, v_parameterization), family)
    found = {name: tuple(entry.get("shape", ())) for name, entry in header.items() if name != "__metadata__"}
    wrong = [name for name, shape in expected.items() if name in found and _squeezed(found[name]) != _squeezed(shape)]
    missing = [name for name in expected if name.startswith(UNET_PREFIX) and name not in found]
    out = []
    if wrong:
        out.append(_shape_message(wrong, found, expected, family))
    if missing:
        shown = ", ".join(missing[:_SHOWN])
        out.append(
            f"lacks {len(missing)} of the {len([n for n in expected if n.startswith(UNET_PREFIX)])} U-Net tensors "
            f"of an {short_name(family)} model (e.g. {shown}): the file is incomplete or a pruned part of a model; "
            "download the full checkpoint"
        )
    return out


UNET_PREFIX = "model.diffusion_model."
_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"


def _shape_message(wrong: list[str], found: dict, expected: dict, family: ModelFamily) -> str:
    name = wrong[0]
    detail = f"{name} is {list(found[name])} where an {short_name(family)} model has {list(expected[name])}"
    if _CONV_IN in wrong and len(found[_CONV_IN]) == 4 and found[_CONV_IN][1] != expected[_CONV_IN][1]:
        return (
            f"its U-Net takes {found[_CONV_IN][1]} input channels where a text-to-image {short_name(family)} model "
            f"takes {expected[_CONV_IN][1]}: it looks like an inpainting or instruct-pix2pix model, which LoRA "
            "training here does not support; use the text-to-image version of the model"
        )
    more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
    return (
        f"its tensors do not fit the {short_name(family)} architecture: {detail}{more}; it is a non-standard "
        "or damaged checkpoint. Download it again, or train on a standard model of this family"
    )


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1x1 conv weight [out, in, 1, 1] and a Linear weight [out, in] are the same tensor."""
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


@cache
def expected_shapes(root: Path, family: ModelFamily) -> dict[str, tuple[int, ...]]:
    """LDM tensor name -> shape of a standard single-file checkpoint of `family`, from the
    architecture config folder `root`, built on the meta device (no weights are made)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the first diffusers/transformers import
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.models import ldm_layout
    from engine.models.loading import TEXT_ENCODERS

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root, subfolder="vae"))
        encoders = [
            (CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel)(
                CLIPTextConfig.from_pretrained(root / slot.subfolder)
            )
            for slot in TEXT_ENCODERS[family]
        ]
    tensors = {**ldm_layout.unet_to_ldm(unet), **ldm_layout.vae_to_ldm(vae)}
    if family == ModelFamily.SD1:
        tensors.update(ldm_layout.clip_to_ldm(encoders[0], ldm_layout.SD1_TEXT_PREFIX))
    elif family == ModelFamily.SD2:
        tensors.update(ldm_layout.open_clip_to_ldm(encoders[0], ldm_layout.SD2_TEXT_PREFIX))
    else:
        tensors.update(ldm_layout.clip_to_ldm(encoders[0], ldm_layout.SDXL_TEXT1_PREFIX))
        tensors.update(ldm_layout.open_clip_to_ldm(encoders[1], ldm_layout.SDXL_TEXT2_PREFIX))
    # buffers and scalars the loaders do not read, whose shapes vary between real files
    skipped = ("position_ids", "logit_scale", "text_projection")
    return {name: tuple(t.shape) for name, t in tensors.items() if not name.endswith(skipped)}


# ---- pickled checkpoints ---------------------------------------------------------------------------


def _inspect_pickle(path: Path, requested: ModelFamily, spec: str) -> ModelInspection:
    scan = scan_pickle(path)
    unsafe = unsafe_globals_of(path, scan)
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:_SHOWN])
        return _refused(
            f"holds Python code besides weights (it would call {shown}); lora-wizard never runs code from a "
            "model file, so it cannot load this one. The file is not damaged",
            "use a .safetensors release of the model, or convert this one once with a tool you trust",
            spec,
        )
    found = family_from_keys(scan.strings, path)
    inspection = _with_family(requested, found.family, found.evidence, spec)
    return replace(inspection, prediction=prediction_of_keys(scan.strings, found.family))


@dataclass(frozen=True)
class PickleScan:
    globals: frozenset[str]  # "module.name" of every function or class the pickle would call
    strings: tuple[str, ...]  # every text constant (the tensor names among them)


def scan_pickle(path: Path) -> PickleScan:
    """Disassemble the pickle of a torch checkpoint (zip format, or the legacy one) without running it."""
    with open(path, "rb") as handle:
        if zipfile.is_zipfile(handle):
            handle.seek(0)
            try:
                with zipfile.ZipFile(handle) as archive:
                    name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                    if name is None:
                        raise ModelError(f"{path} is a zip file without a data.pkl: not a PyTorch checkpoint")
                    return _scan(archive.read(name), pickles=1, path=path)
            except (zipfile.BadZipFile, OSError) as err:
                raise ModelError(f"{path} is a damaged zip archive ({err}); download it again") from err
        handle.seek(0)
        # the legacy format: magic number, protocol, system info, then the object (and raw storages)
        return _scan(handle, pickles=4, path=path)


def _scan(source, pickles: int, path: Path) -> PickleScan:
    import io

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    found_globals: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str] = {}
    recent: list[str] = []  # the last strings pushed: STACK_GLOBAL takes module and name from there
    try:
        for _ in range(pickles):
            for opcode, arg, _pos in pickletools.genops(stream):
                name = opcode.name
                if name == "GLOBAL":
                    module, _, attr = str(arg).partition(" ")
                    found_globals.add(f"{module}.{attr}")
                elif name == "STACK_GLOBAL" and len(recent) >= 2:
                    found_globals.add(f"{recent[-2]}.{recent[-1]}")
                elif isinstance(arg, str) and name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                    strings.append(arg)
                    recent.append(arg)
                elif name == "MEMOIZE" and recent:
                    memo[len(memo)] = recent[-1]
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and recent:
                    memo[int(arg)] = recent[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    recent.append(memo[int(arg)])
    except (ValueError, EOFError) as err:  # genops' words for a stream that is not a pickle
        raise ModelError(f"{path} could not be read as a checkpoint ({err}); download it again") from err
    return PickleScan(frozenset(found_globals), tuple(strings))


def unsafe_globals_of(path: Path, scan: PickleScan) -> set[str]:
    """What torch's weights-only loader would refuse to call, with the numpy scalars that old
    Lightning checkpoints hold allowed as engine/models/checkpoint_file.py loads them. A zip-format
    file is judged by torch itself; the legacy format, which torch's check does not read, by the
    names torch allows there (tensors, their storages and an OrderedDict)."""
    if zipfile.is_zipfile(path):
        import torch

        from engine.models.checkpoint_file import numpy_safe_globals

        with torch.serialization.safe_globals(numpy_safe_globals()):
            return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    return unsafe_globals(scan.globals)


def unsafe_globals(names: Iterable[str]) -> set[str]:
    """Of these "module.name" globals, those a legacy-format checkpoint may not call."""
    return {name for name in names if not _allowed(name)}


_ALLOWED = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Size",
    "torch.device",
    "torch.nn.parameter.Parameter",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "_codecs.encode",  # how pickle protocol 2 writes bytes
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
}


def _allowed(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if name in _ALLOWED:
        return True
    if module == "torch" and (attr.endswith("Storage") or attr in ("float16", "float32", "bfloat16", "float64")):
        return True  # typed storages and dtypes of tensors
    return module == "numpy.dtypes" and attr.endswith("DType")
