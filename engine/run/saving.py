"""Run outputs: LoRA files and states as sd-scripts names them, the tag list, and the pruning of
old epoch/step saves (saving.save_last_n_epochs / save_last_n_steps)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from engine.config.schema import SavePrecision, TagFile, TrainConfig
from engine.fileio import atomic_write_text, next_free_path
from engine.run.state import Position, prune_states, save_state, state_dir_name

SaveKind = Literal["epoch", "step"]

SAVE_DTYPES = {SavePrecision.FLOAT: torch.float32, SavePrecision.FP16: torch.float16, SavePrecision.BF16: torch.bfloat16}


def lora_file_name(cfg: TrainConfig, suffix: str | None) -> str:
    """`<name>.<ext>` for the final file, `<name>-000002.<ext>` for epoch 2, `<name>-step00000100`."""
    base = cfg.saving.output_name or "last"
    stem = base if suffix is None else f"{base}-{suffix}"
    return f"{stem}.{cfg.saving.save_model_as.value}"


def save_lora(network, cfg: TrainConfig, metadata: dict[str, str], run_dir: Path, epoch: int, step: int, suffix: str | None) -> Path:
    """The network's kohya tensors and the run's metadata (with this file's epoch and step) in a
    new file of run_dir; never over an existing one."""
    from engine.network.lora_file import save_lora_file
    from engine.run.metadata import per_save

    path = next_free_path(run_dir / lora_file_name(cfg, suffix))
    return save_lora_file(
        path,
        network.kohya_state_dict(),
        per_save(metadata, epoch, step, cfg.saving.no_metadata),
        dtype=SAVE_DTYPES[cfg.saving.save_precision],
        fmt=cfg.saving.save_model_as.value,
    )


@dataclass
class Saver:
    """A run's LoRA files and (with saving.save_state) training states, written by the main
    process only, with the keep-last-N pruning of sd-scripts."""

    cfg: TrainConfig
    run_dir: Path
    network: Any
    optimizer: Any
    scheduler: Any
    metadata: dict[str, str]
    accelerator: Any
    reporter: Any
    last_state_time: float = field(default_factory=time.monotonic)
    removed: set[Path] = field(default_factory=set)  # saves pruned by keep-last-N
    # checks each saved LoRA against the base model, raising when it does not fit
    # (engine/network/self_check.py); None in tests of the saving rules alone
    check: Callable[[Path], None] | None = None

    @property
    def base(self) -> str:
        return self.cfg.saving.output_name or "last"

    def save(self, epoch: int, step: int, suffix: str | None, position: Position, kind: SaveKind | None) -> list[Path]:
        """The LoRA (and its state); `kind` "epoch"/"step" prunes older saves of that kind."""
        sv = self.cfg.saving
        files = []
        if self.accelerator.is_main_process:
            path = save_lora(self.network, self.cfg, self.metadata, self.run_dir, epoch, step, suffix)
            self.reporter.saved(path)
            files.append(path)
            if self.check is not None:
                self.check(path)
        if sv.save_state:
            files += self.save_state_only(suffix, position)
        if kind is None or not self.accelerator.is_main_process:
            return files
        if sv.save_last_n_epochs if kind == "epoch" else sv.save_last_n_steps:
            self.removed.update(prune_old_saves(self.run_dir, self.cfg, kind, step if kind == "step" else epoch))
        keep_states = sv.save_last_n_steps_state if kind == "step" else sv.save_last_n_epochs_state
        if keep_states:
            prune_states(self.run_dir, self.base, kind, keep_states)
        return files

    def state_due(self) -> bool:
        minutes = self.cfg.saving.save_state_every_n_minutes
        return bool(minutes) and time.monotonic() - self.last_state_time >= minutes * 60

    def save_state_only(self, suffix: str | None, position: Position) -> list[Path]:
        self.last_state_time = time.monotonic()
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return []
        folder = self.run_dir / state_dir_name(self.base, suffix)
        if folder.exists():
            return []  # a step save and a timed save at the same step: one state is enough
        path = save_state(folder, self.network, self.optimizer, self.scheduler, position)
        self.reporter.saved(path)
        keep = self.cfg.saving.save_last_n_steps_state
        if keep and suffix and suffix.startswith("step"):
            self.removed.update(prune_states(self.run_dir, self.base, "step", keep))
        return [path]


def stale_save_numbers(saved: Iterable[int], kind: SaveKind, current: int, last_n: int, every: int) -> list[int]:
    """Which of the `saved` epoch/step numbers to delete after saving number `current`.

    sd-scripts' rules (train_util.get_remove_epoch_no / get_remove_step_no):
    * epochs: `last_n` counts files. Saves come every `every` epochs, so the newest `last_n` are the
      epochs above `current - every * last_n`; older ones go (every=2, last_n=2: at 6 keep 4 and 6).
    * steps: `last_n` is a window of steps, not a file count ("keep the saves of the last N steps"):
      saves older than `current - last_n` go (every=10, last_n=30: at 50 keep 20, 30, 40, 50).
    sd-scripts deletes the one file that just left the window; deleting every number below the
    window gives the same files in a normal run, and also after a resume with a smaller N.
    """
    if last_n < 1 or every < 1:
        raise ValueError(f"last_n and every must be at least 1 (got last_n={last_n}, every={every})")
    if kind == "epoch":
        oldest_kept = current - every * last_n + 1
    elif kind == "step":
        oldest_kept = current - last_n
    else:
        raise ValueError(f"kind must be 'epoch' or 'step', not {kind!r}")
    return sorted(n for n in saved if n < oldest_kept)


def _numbered_saves(run_dir: Path, cfg: TrainConfig, kind: SaveKind) -> dict[int, Path]:
    """This run's epoch (`<name>-000002.<ext>`) or step (`<name>-step00000010.<ext>`) files by number.

    Only exact names as `lora_file_name` writes them: the final file, an interrupted save, the tag
    list, the config and any file renamed by `next_free_path` (`...-000002-2.<ext>`) never match.
    """
    base = re.escape(cfg.saving.output_name or "last")
    ext = re.escape(cfg.saving.save_model_as.value)
    number = r"(\d{6,})" if kind == "epoch" else r"step(\d{8,})"
    pattern = re.compile(rf"{base}-{number}\.{ext}")
    found = {}
    for path in Path(run_dir).iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def prune_old_saves(run_dir: Path, cfg: TrainConfig, kind: SaveKind, current: int) -> list[Path]:
    """Delete this run's epoch (or step) saves that fall out of saving.save_last_n_epochs (or
    save_last_n_steps) after saving epoch (or step) `current`; returns the deleted files.

    Only `run_dir` is looked at (each run has its own folder, so other runs are never touched), and
    only numbered saves of the configured name and format; the final file is never deleted.
    """
    sv = cfg.saving
    if kind == "epoch":
        last_n, every = sv.save_last_n_epochs, sv.save_every_n_epochs
    else:
        last_n, every = sv.save_last_n_steps, sv.save_every_n_steps
    if not last_n:
        return []
    if not every:
        raise ValueError(f"saving.save_last_n_{kind}s needs saving.save_every_n_{kind}s")
    saves = _numbered_saves(run_dir, cfg, kind)
    removed = []
    for n in stale_save_numbers(saves, kind, current, last_n, every):
        saves[n].unlink()
        removed.append(saves[n])
    return removed


def write_tag_file(cfg: TrainConfig, captions: dict[Path, str], run_dir: Path) -> Path | None:
    """LETS' tag list: one `[count] tag` line per tag, by count (then name) or alphabetically."""
    if cfg.saving.tag_file == TagFile.OFF:
        return None
    from engine.data.captions import count_tags

    counts = count_tags(list(captions.values()))  # the same count as ss_tag_frequency
    if cfg.saving.tag_file == TagFile.ALPHABETICAL:
        ordered = sorted(counts.items())
    else:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "".join(f"[{count}] {tag}\n" for tag, count in ordered)
    path = next_free_path(run_dir / f"{cfg.saving.output_name or 'last'}-tags.txt")
    return atomic_write_text(path, text)
