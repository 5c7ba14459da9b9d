"""Run outputs: LoRA file names as sd-scripts names them, the tag list, the config beside them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from engine.config import SavePrecision, TagFile, TrainConfig
from engine.fileio import atomic_write_text, next_free_path

SAVE_DTYPES = {SavePrecision.FLOAT: torch.float32, SavePrecision.FP16: torch.float16, SavePrecision.BF16: torch.bfloat16}


def lora_file_name(cfg: TrainConfig, suffix: str | None) -> str:
    """`<name>.<ext>` for the final file, `<name>-000002.<ext>` for epoch 2, `<name>-step00000100`."""
    base = cfg.saving.output_name or "last"
    stem = base if suffix is None else f"{base}-{suffix}"
    return f"{stem}.{cfg.saving.save_model_as.value}"


def save_lora(session, run_dir: Path, epoch: int, step: int, suffix: str | None) -> Path:
    from engine.metadata import per_save
    from engine.network.lora_file import save_lora_file

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


def tag_counts(captions: dict[Path, str]) -> Counter[str]:
    """How often each comma-separated tag occurs over the dataset's captions (one count per image)."""
    counts: Counter[str] = Counter()
    for text in captions.values():
        first_line = text.split("\n", 1)[0]
        counts.update(tag.strip() for tag in first_line.split(",") if tag.strip())
    return counts


def write_tag_file(cfg: TrainConfig, captions: dict[Path, str], run_dir: Path) -> Path | None:
    """LETS' tag list: one `[count] tag` line per tag, by count (then name) or alphabetically."""
    if cfg.saving.tag_file == TagFile.OFF:
        return None
    counts = tag_counts(captions)
    if cfg.saving.tag_file == TagFile.ALPHABETICAL:
        ordered = sorted(counts.items())
    else:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "".join(f"[{count}] {tag}\n" for tag, count in ordered)
    path = next_free_path(run_dir / f"{cfg.saving.output_name or 'last'}-tags.txt")
    return atomic_write_text(path, text)
