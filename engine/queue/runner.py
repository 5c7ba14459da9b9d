"""Training one preflighted config into run<N>/, and what is left to do when a run fails.

The queue (engine/queue/journal.py) calls these; they never print. A run's outputs all go in a fresh
`<output_folder>/run<N>/` (LoRA files, the config that made them, the tag list), so nothing from an
earlier run is ever overwritten.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.errors import TrainingError
from engine.events import Reporter, RunResult, StopSignal
from engine.queue.preflight import PlannedRun


def run_one(planned: PlannedRun, reporter: Reporter, stop: StopSignal | None = None, run_dir: Path | None = None) -> RunResult:
    """Train one preflighted config into a fresh run folder (or `run_dir`, made by the caller with
    next_run_dir), with its config saved beside the LoRA. Running out of memory is a TrainingError
    that says what to change."""
    from engine.config.io import save_config
    from engine.fileio import next_run_dir
    from engine.run.distributed import shared_path
    from engine.run.train import train

    cfg = planned.config

    written: list[Path] = []

    def make_run_dir() -> Path:
        folder = run_dir or next_run_dir(Path(cfg.saving.output_folder).expanduser())
        written.append(save_config(cfg, folder, name=cfg.saving.output_name or "config"))
        return folder

    # with several processes, the main one makes the folder and saves the config; all train into it
    run_dir = shared_path(make_run_dir)
    try:
        result = train(cfg, run_dir, reporter, stop)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise TrainingError(out_of_memory_advice(cfg, exc)) from exc
        raise
    result.files[:0] = written  # the config, on the main process
    return result


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
