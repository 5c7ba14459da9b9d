"""How long a run will take, from step times measured on this machine.

A step time is kept per kind of run: the model family, the training resolution, the batch, the
device (the GPU's name, or the CPU's), the network type, gradient checkpointing and the mixed
precision; those set the cost of a step. The rank and the dataset do not (the rank's share of a
step is small; the dataset sets the step count, which the plan knows exactly). The table is a JSON
file in the cache folder (LORA_WIZARD_HOME, else ~/.cache/lora-wizard), written by
engine/queue/measure.py: by every run, from its own steps, for a kind not measured yet, or up front
with `--measure`.

A run's estimate is its setup time plus its steps x accumulation x the time of one micro-batch.
Without a measurement of its kind, a measurement of the same family, device and network at another
resolution or batch is scaled by the pixels a micro-batch holds ("estimate, not measured yet");
with none, the duration is unknown ("not measured yet"). Sample images and saves are not counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.fileio import atomic_write_text

TABLE_VERSION = 1
TABLE_FILE = "step-times.json"


class Basis(StrEnum):
    MEASURED = "measured"
    SCALED = "estimate, not measured yet"
    UNKNOWN = "not measured yet"


@dataclass(frozen=True)
class StepKey:
    family: str
    width: int
    height: int
    batch: int
    device: str
    network: str
    checkpointing: bool
    precision: str

    @property
    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def pixels(self) -> int:
        return self.batch * self.width * self.height

    def same_kind(self, other: StepKey) -> bool:
        """Another resolution or batch of the same model, device and network: a time to scale."""
        return (self.family, self.device, self.network, self.checkpointing, self.precision) == (
            other.family, other.device, other.network, other.checkpointing, other.precision,
        )


def step_key(cfg: TrainConfig, family: str | None, device: str, *, cuda: bool) -> StepKey:
    width, height = cfg.dataset.width_height
    precision = cfg.optim.mixed_precision.value if cuda else "no"  # a CPU run trains in fp32
    return StepKey(
        family or "unknown", width, height, cfg.training.batch_size, device,
        cfg.network.type.value, cfg.optim.gradient_checkpointing, precision,
    )


@dataclass(frozen=True)
class StepTime:
    seconds_per_batch: float  # one micro-batch: forward, backward and (at most) an optimizer step
    setup_seconds: float  # model loading, caching, until the first step
    measured: str  # when (ISO time)
    how: str  # "run" (a training run's own steps) or "measure" (--measure)


@dataclass
class StepTimes:
    """The table of measured step times, one file in the cache folder."""

    path: Path
    entries: dict[str, StepTime]

    @classmethod
    def load(cls, path: Path | None = None) -> StepTimes:
        path = path or default_path()
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != TABLE_VERSION:
                return cls(path, {})
            entries = {k: StepTime(**v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path, {})  # none yet, or unreadable: measured again, nothing is lost
        return cls(path, entries)

    def save(self) -> None:
        body = {"version": TABLE_VERSION, "entries": {k: asdict(v) for k, v in sorted(self.entries.items())}}
        atomic_write_text(self.path, json.dumps(body, indent=1) + "\n", overwrite=True)

    def get(self, key: StepKey) -> StepTime | None:
        return self.entries.get(key.text)

    def put(self, key: StepKey, time: StepTime) -> None:
        self.entries[key.text] = time

    def closest(self, key: StepKey) -> tuple[StepKey, StepTime] | None:
        """A measurement of the same kind at the nearest pixel count, to scale."""
        found = []
        for text, time in self.entries.items():
            other = StepKey(**json.loads(text))
            if other.same_kind(key):
                found.append((abs(other.pixels - key.pixels), other, time))
        if not found:
            return None
        _, other, time = min(found, key=lambda f: f[0])
        return other, time


def default_path() -> Path:
    from engine.data.sample_data import cache_root

    return cache_root() / TABLE_FILE


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: unknown
    basis: Basis
    seconds_per_step: float | None = None  # one optimizer step (accumulation included)
    setup_seconds: float = 0.0

    def for_steps(self, steps: int) -> float | None:
        """The duration of the same run with another step count."""
        if self.seconds_per_step is None:
            return None
        return self.setup_seconds + steps * self.seconds_per_step


def estimate(key: StepKey, accumulation: int, total_steps: int, table: StepTimes) -> Estimate:
    """A run's duration: measured for its kind, scaled from a kin, or unknown."""
    time = table.get(key)
    basis = Basis.MEASURED
    per_batch = None if time is None else time.seconds_per_batch
    if time is None:
        kin = table.closest(key)
        if kin is None:
            return Estimate(None, Basis.UNKNOWN)
        other, time = kin
        per_batch = time.seconds_per_batch * key.pixels / other.pixels  # a step's work grows with its pixels
        basis = Basis.SCALED
    per_step = per_batch * accumulation
    return Estimate(time.setup_seconds + total_steps * per_step, basis, per_step, time.setup_seconds)


def finish_times(start: datetime, durations: list[float | None]) -> list[datetime | None]:
    """When each run of a queue ends, the runs one after another from `start` (None once a
    duration is unknown: the ends after it are unknown too)."""
    out: list[datetime | None] = []
    at: datetime | None = start
    for seconds in durations:
        at = None if at is None or seconds is None else datetime.fromtimestamp(at.timestamp() + seconds)
        out.append(at)
    return out


def human_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
