"""Offline and quiet third-party imports: what every process that may import the heavy libraries
(torch, diffusers, bitsandbytes) sets first. Pure Python, no third-party import: the command line
calls it before anything else, and the engine again before it imports those libraries."""

from __future__ import annotations

import logging
import os

#: lines that third-party packages log at import time and that say nothing about a LoRA run, by the
#: logger that writes them (the module's own logger, so a filter on it sees the record):
#: bitsandbytes' CPU backend looks for a 4-bit GEMM kernel of the `kernels` package, which is for
#: 4-bit quantised inference, never used by an 8-bit optimizer or by a LoRA step
#: (bitsandbytes/backends/cpu/ops.py); `kernels` says it skips a trust check because the hub is
#: offline, which is how lora-wizard always runs (kernels/_internals/hf_hub.py)
NOT_ABOUT_THE_RUN: dict[str, tuple[str, ...]] = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    "kernels._internals.hf_hub": ("Skipping publisher trust check",),
}


class DropLines(logging.Filter):
    """Drops a logger's records whose message starts with one of `starts`; lets the rest through."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_heavy_imports() -> None:
    """Offline and quiet before diffusers/transformers/bitsandbytes load: huggingface_hub reads
    HF_HUB_OFFLINE once, at its import (set later, `kernels` would still try the network at
    bitsandbytes' import); the lines in NOT_ABOUT_THE_RUN are dropped, every other warning of these
    packages still shows. Safe to call more than once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name, starts in NOT_ABOUT_THE_RUN.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines(starts))
