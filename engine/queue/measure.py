"""Measuring step times for the estimates (engine/queue/estimate.py), two ways:

* every run measures itself: the reporter's step calls are timed, and a run of a kind not measured
  yet leaves its step time in the table when it ends (a first run costs nothing extra);
* `--measure` measures each kind of a queue up front: a session is set up as for training
  (engine/run/setup.py `prepare_session`) and a few steps of the loop's own `training_step` are
  timed after warm-up steps, as bench/measure.py does, then everything is released.

On a GPU the loop reads the loss back (a host sync) every LOSS_READ_EVERY steps, so the time
between two step calls is not one step's time; a run's time per step is the median over the
blocks between two reads. The measurer syncs after each step it times.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from engine.events import Reporter, SilentReporter, StepStats
from engine.queue.estimate import StepKey, StepTime, StepTimes, step_key
from engine.queue.preflight import PlannedRun
from engine.run.cadence import LOSS_READ_EVERY

WARMUP_STEPS = 2  # the first steps compile kernels and fill caches: never timed
MEASURE_STEPS = 5  # timed steps of --measure


def device_name() -> tuple[str, bool]:
    """(the device a run trains on, whether it is CUDA): the GPU's name, else the CPU's model."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), True
    return f"cpu: {_cpu_model()}", False


def _cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def key_of(run: PlannedRun) -> StepKey:
    device, cuda = device_name()
    return step_key(run.config, run.family, device, cuda=cuda)


# --------------------------------------------------------------------------------- a run's own


def seconds_per_step(times: list[float], warmup: int = WARMUP_STEPS, block: int = LOSS_READ_EVERY) -> float | None:
    """The time of one optimizer step from the clock readings at each step call (times[i] at step
    i + 1): after the warm-up, the median over blocks that end at a loss read (a sync), or, in a
    run too short for a block, the median step-to-step time. None with fewer than 2 timed steps."""
    blocks = [
        (times[end - 1] - times[end - 1 - block]) / block
        for end in range(block, len(times) + 1, block)
        if end - 1 - block >= warmup - 1
    ]
    if blocks:
        return statistics.median(blocks)
    gaps = [b - a for a, b in zip(times[warmup - 1 :], times[warmup:])]
    return statistics.median(gaps) if len(gaps) >= 2 else None


class StepClock:
    """The run's reporter, also reading a clock at each step call (a plain class: a dataclass
    field would hide a Reporter method of its name)."""

    def __init__(self, reporter: Reporter, clock: Callable[[], float] = time.perf_counter) -> None:
        self._reporter = reporter
        self._clock = clock
        self.began = clock()
        self.times: list[float] = []

    def step(self, stats: StepStats) -> None:
        self.times.append(self._clock())
        self._reporter.step(stats)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def record_run(run: PlannedRun, clock: StepClock, table: StepTimes | None = None) -> StepTime | None:
    """Keep a run's own step time when its kind has none yet; returns what was kept."""
    per_step = seconds_per_step(clock.times)
    if per_step is None:
        return None
    table = table or StepTimes.load()
    key = key_of(run)
    if table.get(key) is not None:
        return None  # measured once and kept; --measure measures again
    setup = max(0.0, clock.times[0] - clock.began - per_step)
    kept = StepTime(per_step / run.plan.grad_accum, setup, _now(), "run")
    table.put(key, kept)
    table.save()
    return kept


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------- --measure


def measure_run(run: PlannedRun, clock: Callable[[], float] = time.perf_counter) -> StepTime:
    """Set a session up for `run` and time MEASURE_STEPS micro-batches after WARMUP_STEPS."""
    import torch

    from engine.data.plan import epoch_batches
    from engine.run.setup import prepare_session, quiet_heavy_imports, release
    from engine.run.train import training_step

    quiet_heavy_imports()
    cfg, plan = run.config, run.plan
    threads = torch.get_num_threads()
    session = None
    try:
        with tempfile.TemporaryDirectory(prefix="lora-wizard-measure-") as folder:
            started = clock()
            session = prepare_session(cfg, plan, Path(folder), SilentReporter())
            setup = clock() - started
            batches = _batches(plan, cfg.training.seed, cfg.dataset.flip_aug, epoch_batches)
            seconds = []
            for number in range(WARMUP_STEPS + MEASURE_STEPS):
                epoch, index, batch = next(batches)
                begin = clock()
                training_step(session, batch, epoch, index)
                _sync(torch)
                if number >= WARMUP_STEPS:
                    seconds.append(clock() - begin)
    finally:
        if session is not None:
            release(session)
        torch.set_num_threads(threads)  # a CPU session computes on one thread
    return StepTime(statistics.median(seconds), setup, _now(), "measure")


def _batches(plan, seed: int, flip: bool, epoch_batches):
    epoch = 0
    while True:
        epoch += 1
        for index, batch in enumerate(epoch_batches(plan, seed, epoch, flip)):
            yield epoch, index, batch


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_queue(runs: list[PlannedRun], reporter: Reporter, *, again: bool, table: StepTimes | None = None) -> StepTimes:
    """Measure each kind of the queue that has no time yet (every kind with `again`)."""
    table = table or StepTimes.load()
    done: set[str] = set()
    for run in runs:
        key = key_of(run)
        if key.text in done or (table.get(key) is not None and not again):
            continue
        reporter.notice(f"measuring the step time of {run.source} ({key.family}, {key.width}x{key.height}, batch {key.batch}, {key.device})")
        table.put(key, measure_run(run))
        table.save()
        done.add(key.text)
    return table

