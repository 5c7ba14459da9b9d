"""How the engine talks to a front-end: a reporter it calls, and a stop flag the front-end sets.

The engine never prints. It calls a `Reporter` (the terminal UI renders a rich progress bar; tests
record the calls) and polls a `StopSignal` between steps (the UI sets it on Ctrl-C).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Protocol


class Outcome(IntEnum):
    """How a command ended, as its exit code (engine/queue/policy.py decides which)."""

    OK = 0
    RUN_FAILED = 1
    BAD_INPUT = 2
    CANCELLED = 130


class Phase(StrEnum):
    """What a run is doing before and while it trains (the front-end shows the slow ones)."""

    LOADING_MODEL = "loading model"
    CACHING_LATENTS = "caching latents"
    CACHING_TEXT = "caching text-encoder outputs"
    TRAINING = "training"


class RunStatus(StrEnum):
    """How a run ended (the queue journal's RunState has these and the states before the end)."""

    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepStats:
    step: int  # optimizer steps done so far (1-based after the first step)
    total_steps: int
    epoch: int  # 1-based
    total_epochs: int
    loss: float | None  # running mean of the recent losses; None between loss reads
    lr: float


@dataclass(slots=True)
class RunResult:
    run_dir: Path
    status: RunStatus
    steps: int
    total_steps: int
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # what the run did beyond its config (an out-of-memory retry)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the last read), as read


class Reporter(Protocol):
    def notice(self, message: str) -> None: ...

    def phase(self, name: Phase) -> None: ...

    def progress(self, phase: Phase, done: int, total: int) -> None:
        """How far a slow phase before the first step is (latents or captions encoded of `total`);
        called once with done=0 when the phase starts, then after each batch."""
        ...

    def started(self, total_steps: int, total_epochs: int) -> None: ...

    def step(self, stats: StepStats) -> None: ...

    def saved(self, path: Path) -> None: ...

    def finished(self, result: RunResult) -> None: ...


class SilentReporter:
    """Records what happened; used by tests and by non-main ranks."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.phases: list[str] = []
        self.progressed: list[tuple[Phase, int, int]] = []
        self.steps: list[StepStats] = []
        self.saved_files: list[Path] = []
        self.result: RunResult | None = None

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def phase(self, name: Phase) -> None:
        self.phases.append(name)

    def progress(self, phase: Phase, done: int, total: int) -> None:
        self.progressed.append((phase, done, total))

    def started(self, total_steps: int, total_epochs: int) -> None:
        pass

    def step(self, stats: StepStats) -> None:
        self.steps.append(stats)

    def saved(self, path: Path) -> None:
        self.saved_files.append(path)

    def finished(self, result: RunResult) -> None:
        self.result = result


class StopSignal:
    """Set by the front-end (first Ctrl-C); the loop finishes the current step, saves, and stops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
