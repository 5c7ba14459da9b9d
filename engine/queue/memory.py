"""Memory between and during runs: telling an out-of-memory failure from others, what to change
in the config after one, and giving a finished run's memory back before the next starts. No torch
import: the queue uses these before any run has loaded torch."""

from __future__ import annotations

import gc
import sys

from engine.config.schema import TrainConfig


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), a RuntimeError saying so (MPS, the CPU allocator), MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_advice(cfg: TrainConfig, exc: BaseException) -> str:
    """What to change, only the changes that are still possible for this config."""
    ds, tr, opt = cfg.dataset, cfg.training, cfg.optim
    fixes = []
    if tr.batch_size > 1:
        fixes.append(
            f"lower training.batch_size (now {tr.batch_size}; raise optim.gradient_accumulation_steps to keep the effective batch)"
        )
    if not opt.gradient_checkpointing:
        fixes.append("set optim.gradient_checkpointing=true")
    width, height = ds.width_height
    fixes.append(f"lower dataset.resolution (now {width}x{height})")
    if not ds.cache_latents:
        fixes.append("set dataset.cache_latents=true")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"out of memory ({first_line}): " + ", or ".join(fixes)


def release_memory() -> None:
    """Free what the last run left before the next one starts. A failed run's model is held by
    the frames of its exception's traceback until those are collected; then the CUDA cache goes
    back to the driver, so the next run (or another program) gets the memory."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
