"""Writing files so that nothing is ever lost: atomic writes and fresh names, never an overwrite."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigError, OutputExistsError


def atomic_write(path: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it into place.

    A crash or an exception half-way leaves no partial file under the final name (the temporary
    one is removed). Unless `overwrite`, an existing `path` is an `OutputExistsError`: callers pick a
    fresh name first (`next_free_path`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # after `write`, not before: safetensors' save_file replaces the file it is given with a
        # new one of mode 0600 (as mkstemp's own), which a WebUI running as another user cannot read
        give_normal_mode(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if not overwrite and path.exists():
            raise OutputExistsError(f"{path} appeared while it was being written; refusing to overwrite it")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def give_normal_mode(path: Path) -> None:
    """The mode `open()` would have given: 0666 for a file, 0777 for a folder, less the umask (a
    temporary file or folder from tempfile is private to its owner)."""
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & ~_current_umask())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, *, overwrite: bool = False) -> Path:
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def next_free_path(path: Path) -> Path:
    """`path` if it is free, else `stem-2.ext`, `stem-3.ext`, ... (the first free one)."""
    path = Path(path)
    if not path.exists():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


_RUN_DIR = re.compile(r"^run(\d+)$")


def next_run_dir(parent: Path) -> Path:
    """Create and return `parent/run<N>` with N one above the highest existing run folder."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := _RUN_DIR.match(p.name))]
    n = max(taken, default=0) + 1
    while True:
        run_dir = parent / f"run{n}"
        try:
            run_dir.mkdir()  # atomic: two queues racing for the same N cannot both get it
            return run_dir
        except FileExistsError:
            n += 1


def read_config_text(path: Path, kind: str, missing_hint: str = "") -> str:
    """A config file's text (UTF-8, a leading BOM as Windows editors write it dropped), or a
    ConfigError that names the file and the fix. `kind` names what the file should be (".toml
    file"), `missing_hint` is added to the fix for a path that does not exist."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; check the path{missing_hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the path of a {kind}") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; make the file readable") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from None
