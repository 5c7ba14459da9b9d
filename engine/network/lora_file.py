"""Reading and writing LoRA files (.safetensors, .ckpt, .pt).

A kohya LoRA file is a flat dict of tensors (`<name>.lora_down.weight`, `<name>.lora_up.weight`,
`<name>.alpha`), all in the save dtype. A .safetensors file also carries string metadata: the
`ss_*` training facts (built elsewhere) plus the two hashes sd-webui-additional-networks uses to
index LoRAs, which sd-scripts precomputes at save time (`library/train_util.py`,
`precalculate_safetensors_hashes`):

* `sshs_model_hash`: sha256 of everything after the safetensors header, for the file serialised
  with only its `ss_*` metadata. The header is skipped, so this is a hash of the tensor bytes.
* `sshs_legacy_hash`: the first 8 hex digits of sha256 over the 64 KiB at offset 1 MiB of that same
  serialisation (header included; a file under 1 MiB hashes the empty string).

.ckpt and .pt files are `torch.save` of the plain tensor dict and carry no metadata at all: the
`ss_*` facts and hashes are lost in those formats, as with sd-scripts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from engine.errors import ModelError
from engine.fileio import atomic_write

FORMATS = ("safetensors", "ckpt", "pt")
LoraFormat = Literal["safetensors", "ckpt", "pt"]

_LEGACY_OFFSET = 0x100000  # 1 MiB
_LEGACY_LENGTH = 0x10000  # 64 KiB


def addnet_model_hash(safetensors_bytes: bytes) -> str:
    """sha256 (hex) of a serialised safetensors file minus its 8-byte length and JSON header."""
    header_len = int.from_bytes(safetensors_bytes[:8], "little")
    return hashlib.sha256(safetensors_bytes[8 + header_len :]).hexdigest()


def addnet_legacy_hash(safetensors_bytes: bytes) -> str:
    """First 8 hex digits of sha256 over 64 KiB at offset 1 MiB (the old additional-networks hash)."""
    window = safetensors_bytes[_LEGACY_OFFSET : _LEGACY_OFFSET + _LEGACY_LENGTH]
    return hashlib.sha256(window).hexdigest()[:8]


def safetensors_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) of `tensors` saved with the `ss_*` part of `metadata`.

    Only `ss_*` keys take part because they are fixed at training time; keys a user edits later
    (modelspec title, description...) would otherwise change the hash.
    """
    from safetensors.torch import save

    data = save(dict(tensors), {k: v for k, v in metadata.items() if k.startswith("ss_")})
    return addnet_model_hash(data), addnet_legacy_hash(data)


def _check_format(path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown LoRA file format {fmt!r}; use one of {', '.join(FORMATS)}")
    if path.suffix != f".{fmt}":
        raise ValueError(f"{path}: a {fmt} LoRA file must end in .{fmt}")


def save_lora_file(
    path: Path | str,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    dtype: torch.dtype,
    fmt: LoraFormat,
) -> Path:
    """Write `tensors` (cast to `dtype`, on the CPU) to a new file at `path`, atomically.

    An existing `path` is an `OutputExistsError` (nothing is ever overwritten). For safetensors,
    `metadata` (all values strings) is stored with `sshs_model_hash` and `sshs_legacy_hash` added;
    ckpt/pt files hold the tensors only and `metadata` is not written.
    """
    path = Path(path)
    _check_format(path, fmt)
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"LoRA metadata values must be strings; not for {bad[:5]}")
    out = {name: t.detach().to(device="cpu", dtype=dtype).contiguous() for name, t in tensors.items()}

    if fmt == "safetensors":
        from safetensors.torch import save_file

        model_hash, legacy_hash = safetensors_hashes(out, metadata)
        full = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
        return atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata=full))
    return atomic_write(path, lambda tmp: torch.save(out, tmp))


def load_lora_file(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, metadata) of a LoRA file; ckpt/pt files give empty metadata.

    A missing, unreadable or non-LoRA file is a `ModelError` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"LoRA file {path} does not exist")
    if path.suffix == ".safetensors":
        tensors, metadata = _load_safetensors(path)
    elif path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        tensors, metadata = _load_torch(path), {}
    else:
        raise ModelError(f"{path}: not a LoRA file type we read (.safetensors, .ckpt, .pt)")
    if not tensors:
        raise ModelError(f"{path} holds no tensors; it is not a LoRA file")
    return tensors, metadata


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file (truncated or corrupt?): {exc}") from exc
    return tensors, metadata


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: a LoRA is tensors only, and this refuses pickled code
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise ModelError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # some tools wrap the tensors
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path} does not hold a dict of tensors; it is not a LoRA file")
    return dict(data)
