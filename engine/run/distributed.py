"""Several processes (accelerate launch / torchrun): who writes, and the one run folder they share.

Only the main process writes files (run folders, configs, LoRAs, states, the queue journal, logs,
samples). The others train their share of each batch and stay silent. These helpers read the
launcher's environment, so the UI can ask "am I the main process?" without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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

    from engine.run.setup import check_launch

    state = PartialState(cpu=not torch.cuda.is_available())
    check_launch(state.num_processes)
    box = [str(make()) if state.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return Path(box[0])
