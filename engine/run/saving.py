"""Run outputs: LoRA file names as sd-scripts names them, the tag list, the config beside them,
and the pruning of old epoch/step saves (saving.save_last_n_epochs / save_last_n_steps)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

from engine.config.schema import SavePrecision, TagFile, TrainConfig
from engine.fileio import atomic_write_text, next_free_path

SAVE_DTYPES = {SavePrecision.FLOAT: torch.float32, SavePrecision.FP16: torch.float16, SavePrecision.BF16: torch.bfloat16}


def lora_file_name(cfg: TrainConfig, suffix: str | None) -> str:
    """`<name>.<ext>` for the final file, `<name>-000002.<ext>` for epoch 2, `<name>-step00000100`."""
    base = cfg.saving.output_name or "last"
    stem = base if suffix is None else f"{base}-{suffix}"
    return f"{stem}.{cfg.saving.save_model_as.value}"


def save_lora(session, run_dir: Path, epoch: int, step: int, suffix: str | None) -> Path:
    from engine.network.lora_file import save_lora_file
    from engine.run.metadata import per_save

    cfg = session.cfg
    network = session.accelerator.unwrap_model(session.network)
    path = next_free_path(run_dir / lora_file_name(cfg, suffix))
    return save_lora_file(
        path,
        network.kohya_state_dict(),
        per_save(session.metadata, epoch, step, cfg.saving.no_metadata),
        dtype=SAVE_DTYPES[cfg.saving.save_precision],
        fmt=cfg.saving.save_model_as.value,
    )


SaveKind = Literal["epoch", "step"]


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
