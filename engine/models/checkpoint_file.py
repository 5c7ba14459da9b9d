"""Reading weight files safely: `.safetensors` headers without torch, pickled `.ckpt` only with
torch's weights-only unpickler.

A `.ckpt` is a pickle, and a pickle can run code. It is therefore only ever opened with
`torch.load(weights_only=True)`, which accepts tensors and plain containers. Old PyTorch Lightning
checkpoints also hold numpy scalars (in `callbacks`, e.g. ModelCheckpoint's best score), so the
numpy scalar constructor and dtypes are allowed as well; anything else is refused with a message
that says how to convert the file, never by falling back to `weights_only=False`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import ModelError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# A header larger than this is not a real safetensors header (real ones are a few hundred KB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # the legacy format starts with a pickle protocol opcode

_REDOWNLOAD = "download it again (the file is damaged or incomplete)"


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor name -> dtype/shape/offsets), read with plain
    Python so that callers need not import torch. Checks that the data the header promises is
    really in the file, so a truncated download is caught here."""
    try:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelError(f"{path} is not a .safetensors file: it is only {size} bytes; {_REDOWNLOAD}")
            length = int.from_bytes(prefix, "little")
            if length > min(_MAX_HEADER_BYTES, size - 8):
                raise ModelError(
                    f"{path} is not a .safetensors file (its first 8 bytes do not give a plausible "
                    f"header length); {_REDOWNLOAD}, or check that it really is a safetensors model"
                )
            raw = handle.read(length)
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path} is not a .safetensors file (its header is not JSON); {_REDOWNLOAD}") from err
    if not isinstance(header, dict):
        raise ModelError(f"{path} is not a .safetensors file (its header is not a table of tensors)")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ModelError(f"{path} has a damaged header (tensor {name!r} has no data offsets); {_REDOWNLOAD}")
        data_end = max(data_end, int(offsets[1]))
    if 8 + length + data_end > size:
        missing = 8 + length + data_end - size
        raise ModelError(f"{path} is truncated: {missing:,} bytes of tensor data are missing; {_REDOWNLOAD}")
    return header


def safetensors_keys(path: Path) -> list[str]:
    return [name for name in read_safetensors_header(path) if name != "__metadata__"]


def numpy_safe_globals() -> list:
    """What old Lightning checkpoints need beyond tensors: numpy scalars and their dtypes.

    Files written under numpy 1.x name the scalar constructor `numpy.core.multiarray.scalar`;
    numpy 2 moved it to `numpy._core`, so it is allowed under both names.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtype_classes = [
        cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)
    ]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtype_classes]


def load_pickled_checkpoint(path: Path) -> Any:
    """`torch.load` with the weights-only unpickler (plus numpy scalars), memory-mapped if possible."""
    import torch

    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror or err}") from err
    if not magic.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise ModelError(
            f"{path} is not a PyTorch checkpoint (it starts with {magic!r}, not a zip or pickle "
            f"header); {_REDOWNLOAD}, or give a .safetensors/.ckpt model file"
        )
    with torch.serialization.safe_globals(numpy_safe_globals()):
        try:
            # mmap keeps a multi-GB checkpoint out of RAM until its tensors are used; the legacy
            # (pre-zip) format cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True, mmap=magic.startswith(_ZIP_MAGIC))
        except Exception as err:  # torch raises several unrelated types for a bad file
            raise _pickle_error(path, err) from err


def _pickle_error(path: Path, err: Exception) -> ModelError:
    text = str(err)
    marker = "Unsupported global: GLOBAL "
    if marker in text:
        name = text.split(marker, 1)[1].split()[0]
        return ModelError(
            f"{path} holds Python objects besides weights ({name}), which lora-wizard does not "
            "unpickle because a pickle can run code. Convert it once to .safetensors with a tool "
            "you trust, or use a .safetensors release of the model"
        )
    # torch's messages run on with advice about weights_only; the first sentence says what broke
    reason = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(err).__name__
    return ModelError(f"{path} could not be read as a checkpoint ({reason}); {_REDOWNLOAD}")


def load_state_dict(path: Path) -> dict[str, Any]:
    """All tensors of a .safetensors or .ckpt file, unwrapped from a Lightning `state_dict` entry."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        read_safetensors_header(path)  # clear errors for truncated or foreign files
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise ModelError(f"{path} could not be read ({err}); {_REDOWNLOAD}") from err
    elif suffix in PICKLE_SUFFIXES:
        state = load_pickled_checkpoint(path)
    else:
        raise ModelError(f"{path} is not a model file: expected a {', '.join(WEIGHT_SUFFIXES)} file")
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path} holds no table of weights; expected a Stable Diffusion checkpoint")
    return state


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a weight file. Cheap for .safetensors (header only, no torch)."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return safetensors_keys(path)
    return list(load_state_dict(path))
