"""Training states for an exact resume: LoRA weights, optimizer, LR schedule and the loop position.

A state folder (`<name>-000002-state`, `<name>-step00000100-state`, `<name>-interrupted-state`,
`<name>-state`) holds:

    network.safetensors   the LoRA weights in fp32 (kohya names)
    optimizer.pt          the optimizer's state_dict (moments, 8-bit quantisation maps, ...)
    scheduler.pt          the LR scheduler's state_dict (its position in the schedule)
    train_state.json      epoch, batches done in that epoch, optimizer steps, seed, process count

Everything random in a step is derived from (seed, epoch, batch), so the position is all the loop
needs to draw exactly what the uninterrupted run would have drawn. The folder is written under a
temporary name and renamed when complete: a crash mid-save never leaves a half state that looks whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.errors import ConfigError
from engine.fileio import give_normal_mode

STATE_FILE = "train_state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class Position:
    epoch: int  # 1-based epoch the next batch belongs to
    batches_done: int  # batches of that epoch already trained (on this process's share)
    step: int  # optimizer steps done
    seed: int
    num_processes: int
    total_steps: int


def state_dir_name(base: str, suffix: str | None) -> str:
    return f"{base}-state" if suffix is None else f"{base}-{suffix}-state"


def save_state(folder: Path, network, optimizer, scheduler, position: Position) -> Path:
    """Write the state folder atomically (temp folder, then rename); refuses an existing folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; refusing to overwrite a saved state")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.kohya_state_dict().items()}
        save_file(tensors, str(tmp / "network.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(_schedule_position(scheduler), tmp / "scheduler.pt")
        body = {"version": STATE_VERSION, **asdict(position)}
        (tmp / STATE_FILE).write_text(json.dumps(body, indent=2), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
            give_normal_mode(f)  # save_file writes 0600, mkdtemp makes 0700: readable like the LoRA
        give_normal_mode(tmp)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_position(folder: Path) -> Position:
    """The loop position of a state folder; a missing or foreign folder is a ConfigError."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            f"saving.resume: {folder} is not a training state folder (no {STATE_FILE}); give a "
            "'<name>-...-state' folder written by a run with saving.save_state=true"
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        body.pop("version", None)
        return Position(**body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"saving.resume: {path} is damaged ({exc}); pick another state folder") from None


def check_compatible(position: Position, *, seed: int, num_processes: int, folder: Path) -> None:
    if position.num_processes != num_processes:
        raise ConfigError(
            f"saving.resume: {folder} was saved by a {position.num_processes}-process run; resume it with "
            f"{position.num_processes} processes (now {num_processes}), or start a new run"
        )
    if position.seed != seed:
        raise ConfigError(
            f"saving.resume: {folder} was trained with training.seed={position.seed}, the config says {seed}; "
            "an exact resume needs the same seed"
        )


def load_state(folder: Path, network, optimizer, scheduler) -> None:
    from safetensors.torch import load_file

    folder = Path(folder)
    network.load_weights(load_file(str(folder / "network.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    position = torch.load(folder / "scheduler.pt", weights_only=True, map_location="cpu")
    # the schedule itself (formula, warmup, total) comes from the config; only its position is loaded
    scheduler.load_state_dict({**position, "lr_lambdas": [None] * len(position["base_lrs"])})


def _schedule_position(scheduler) -> dict:
    """The scheduler's state without its lambdas: plain numbers, loadable with weights_only=True."""
    state = dict(scheduler.state_dict())
    state.pop("lr_lambdas", None)
    return state


_NUMBERED = re.compile(r"^(?P<base>.+)-(?P<kind>step)?(?P<n>\d+)-state$")


def prune_states(run_dir: Path, base: str, kind: str, keep: int) -> list[Path]:
    """Remove all but the newest `keep` epoch (kind "epoch") or step ("step") states of `base`."""
    found: list[tuple[int, Path]] = []
    for path in Path(run_dir).iterdir():
        m = _NUMBERED.match(path.name)
        if not m or m.group("base") != base or not path.is_dir():
            continue
        if (m.group("kind") == "step") == (kind == "step"):
            found.append((int(m.group("n")), path))
    removed = [path for _, path in sorted(found)[:-keep]] if keep > 0 else []
    for path in removed:
        shutil.rmtree(path)
    return removed


def latest_state(run_dir: Path) -> Path | None:
    """The state folder in `run_dir` with the most optimizer steps, or None."""
    best: tuple[int, Path] | None = None
    for folder in Path(run_dir).glob("*-state"):
        try:
            steps = read_position(folder).step
        except ConfigError:
            continue  # a half-written or foreign folder
        if best is None or steps > best[0]:
            best = (steps, folder)
    return None if best is None else best[1]
