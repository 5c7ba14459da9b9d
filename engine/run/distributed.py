"""Several processes (accelerate launch / torchrun): who writes, and the one run folder they share.

Only the main process writes files (run folders, configs, LoRAs, states, the queue journal, logs,
samples). The others train their share of each batch and stay silent. These helpers read the
launcher's environment, so the UI can ask "am I the main process?" without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigError


def launched_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def shared_path(make: Callable[[], Path]) -> Path:
    """`make()` on the main process (e.g. create the next run folder); every process gets its path."""
    if launched_processes() == 1:
        return make()
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=not torch.cuda.is_available())
    check_launch(state.num_processes)
    box = [str(make()) if state.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return Path(box[0])


def check_launch(num_processes: int) -> None:
    """Refuse processes that were launched together but are not connected: accelerate starts
    such processes for --multi_gpu on a machine without GPUs when ACCELERATE_USE_CPU is not set.
    Each would train the whole run on its own, duplicating the work and racing on the files."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != num_processes:
        raise ConfigError(
            f"{launched} processes were launched but they are not connected for distributed training "
            f"(this one sees {num_processes}); each would train the whole run on its own. On GPUs use "
            "`accelerate launch --multi_gpu --num_processes N run_wizard.py ...`; without GPUs add "
            "ACCELERATE_USE_CPU=1 to that command"
        )


#: with several processes, how often (in steps) they compare stop requests and timed-save clocks
AGREE_EVERY = 10


def average_gradients(params: list, num_processes: int) -> None:
    """Every process gets the mean of all processes' gradients, in one all-reduce. The LoRA runs
    inside the U-Net's and text encoders' own forward, never through a DDP-wrapped module, so DDP
    would not reduce its gradients; this does."""
    if num_processes == 1:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def agree(step: int, num_processes: int, device, *flags: bool) -> tuple[bool, ...]:
    """Decisions every process must take together (stop on Ctrl-C, a timed state save).

    One process alone: the flags as they are. Several: each process may see a Ctrl-C or the clock
    at a different step, and one that stops or saves alone would leave the others waiting in a
    collective. So they compare flags (any process's True wins) every `AGREE_EVERY` steps, the same
    steps on every process, and act only then.
    """
    if num_processes == 1:
        return flags
    if step % AGREE_EVERY:
        return tuple(False for _ in flags)
    import torch
    import torch.distributed as dist

    votes = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in votes.tolist())
