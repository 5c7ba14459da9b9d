"""The base model's hashes that tools match a LoRA to its checkpoint by, computed once per file.

A LoRA's `ss_sd_model_hash` is AUTOMATIC1111's old model hash (the first 8 hex digits of SHA-256
over the 64 KiB at offset 1 MiB) and `ss_new_sd_model_hash` the SHA-256 of the whole file, as
kohya-ss/sd-scripts writes them (library/train_util.py `model_hash`, `calculate_sha256`). Hashing a
multi-gigabyte checkpoint takes seconds, so the result is kept in `<LORA_WIZARD_HOME>/cache/
model-hashes.json`, keyed by the file's absolute path, size and modification time: a file that did
not change is hashed once, a replaced one again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from engine.data.sample_data import cache_root
from engine.fileio import atomic_write_text

#: read size for the full hash (sd-scripts reads 1 MiB blocks too)
BLOCK = 1 << 20
LEGACY_OFFSET, LEGACY_SIZE = 0x100000, 0x10000


@dataclass(frozen=True)
class ModelHashes:
    legacy: str  # 8 hex digits: A1111's old "model hash"
    sha256: str  # 64 hex digits: A1111's current hash


def legacy_hash(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(LEGACY_OFFSET)
        return hashlib.sha256(handle.read(LEGACY_SIZE)).hexdigest()[:8]


def full_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_file() -> Path:
    return cache_root() / "cache" / "model-hashes.json"


def model_hashes(path: Path | str) -> ModelHashes | None:
    """Both hashes of a model file, from the cache when the file is unchanged; None when `path` is
    not a file (a diffusers folder, the built-in demo model): there is nothing to hash."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    resolved = path.resolve()
    stat = resolved.stat()
    key = str(resolved)
    cache = _read_cache()
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return ModelHashes(entry["legacy"], entry["sha256"])
    hashes = ModelHashes(legacy_hash(resolved), full_hash(resolved))
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "legacy": hashes.legacy, "sha256": hashes.sha256}
    _write_cache(cache)
    return hashes


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: it is rebuilt
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict) -> None:
    path = cache_file()
    try:
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n", overwrite=True)
    except OSError:
        pass  # a read-only home: the hashes are still right, only not remembered


def forget(path: Path | str) -> None:
    """Drop a file's cached hashes (tests, and a user who wants them recomputed)."""
    cache = _read_cache()
    if cache.pop(str(Path(path).expanduser().resolve()), None) is not None:
        _write_cache(cache)

