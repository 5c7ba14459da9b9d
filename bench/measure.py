"""The measurements: clocks, the matmul peak, one row's timed training loop, latent caching.

On CUDA every duration inside the loop is read from CUDA events recorded around the timed windows,
and the host waits for the device only after the last window: a sync per step would add its own
stall to what is measured. On a CPU (--smoke) the same code runs with a perf_counter clock.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.events import RunResult, StepStats

GIB = 2**30


class CudaClock:
    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000

    def sync(self) -> None:
        torch.cuda.synchronize()


class CpuClock:
    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start

    def sync(self) -> None:
        pass


def clock_for(device: torch.device) -> CudaClock | CpuClock:
    return CudaClock() if device.type == "cuda" else CpuClock()


@dataclass(frozen=True, slots=True)
class MatmulPeak:
    n: int
    dtype: str
    tflops: float  # median over the timed repeats


def matmul_peak(device: torch.device, clock, *, n: int, dtype: torch.dtype, repeats: int, warmup: int = 3) -> MatmulPeak:
    """The achieved FLOP/s of one n^3 matmul, the median of `repeats` timings: the ceiling the
    MFU column is measured against (issue 6: 8192^3 in bf16 on the GPU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    marks = []
    for _ in range(repeats):
        start = clock.mark()
        torch.mm(a, b)
        marks.append((start, clock.mark()))
    clock.sync()
    seconds = statistics.median(clock.seconds(s, e) for s, e in marks)
    return MatmulPeak(n, str(dtype).removeprefix("torch."), 2 * n**3 / seconds / 1e12)


class NoticeReporter:
    """The engine's Reporter, keeping only its notices (shown under the table)."""

    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def phase(self, name: str) -> None: ...

    def progress(self, phase: str, done: int, total: int) -> None: ...

    def started(self, total_steps: int, total_epochs: int) -> None: ...

    def step(self, stats: StepStats) -> None: ...

    def saved(self, path: Path) -> None: ...

    def finished(self, result: RunResult) -> None: ...


class TrainingSteps:
    """engine/run/train.py's loop body (loss, backward, clip, optimizer and schedule steps, zero_grad,
    the loss read when engine/run/cadence.py says, the per-step log and report calls) over the
    session's own plan batches, epoch after epoch. Saving, sampling and the stop flag are left out:
    they are not part of a step. The step and the loss meter are the loop's own."""

    def __init__(self, session) -> None:
        from engine.run.train import LossMeter

        self.session = session
        self.batches = self._batches()
        self.done = 0
        self.meter = LossMeter()

    def _batches(self):
        from engine.data.plan import epoch_batches

        cfg, epoch = self.session.cfg, 0
        while True:
            epoch += 1
            for index, batch in enumerate(epoch_batches(self.session.plan, cfg.training.seed, epoch, cfg.dataset.flip_aug)):
                yield epoch, index, batch

    @property
    def last_loss(self) -> float | None:
        return self.meter.shown

    def __call__(self) -> None:
        from engine.run.cadence import loss_read_due
        from engine.run.tracking import learning_rates
        from engine.run.train import training_step

        session, (epoch, index, batch) = self.session, next(self.batches)
        loss, _ = training_step(session, batch, epoch, index)
        self.meter.add(loss)
        self.done += 1
        due = loss_read_due(self.done, session.plan.total_steps, epoch_end=False, stopping=False)
        fresh = self.meter.read(self.done) if due else None  # the host sync the loop makes
        session.train_log.step(self.done, fresh, learning_rates(session.optimizer))
        session.reporter.step(StepStats(self.done, session.plan.total_steps, epoch, session.plan.epochs, self.last_loss, session.scheduler.get_last_lr()[0]))


@dataclass(frozen=True, slots=True)
class LoopCounts:
    warmup: int  # steps before timing, the first one included
    windows: int
    steps: int  # per window


@dataclass
class RowResult:
    samples_per_s: float | None = None  # median over the windows
    window_samples_per_s: list[float] = field(default_factory=list)
    step_ms: float | None = None
    peak_gib: float | None = None  # during the training steps (setup's peak is separate)
    setup_peak_gib: float | None = None
    flops_per_sample: float | None = None
    mfu: float | None = None
    first_step_s: float | None = None
    setup_s: float | None = None
    loss: float | None = None
    notices: list[str] = field(default_factory=list)
    error: str | None = None


def measure_row(cfg, batch: int, counts: LoopCounts, peak: MatmulPeak, device: torch.device) -> RowResult:
    """Set up a session for `cfg`, then time its training steps. An out-of-memory row is a
    result ("does not fit"), reported in the table; any other failure stops the benchmark."""
    from engine.data.plan import make_plan
    from engine.run.setup import prepare_session, release

    clock, reporter, result = clock_for(device), NoticeReporter(), RowResult()
    free_memory(device)
    session = None
    with tempfile.TemporaryDirectory(prefix="lora-wizard-bench-run-") as run_dir:
        try:
            started = time.perf_counter()
            session = prepare_session(cfg, make_plan(cfg), Path(run_dir), reporter)
            clock.sync()
            result.setup_s = time.perf_counter() - started
            result.setup_peak_gib = peak_gib(device, reset=True)
            time_steps(TrainingSteps(session), batch, counts, clock, result)
            result.peak_gib = peak_gib(device, reset=False)
            result.flops_per_sample = count_flops(TrainingSteps(session)) / batch
            result.mfu = result.samples_per_s * result.flops_per_sample / (peak.tflops * 1e12)
        except torch.OutOfMemoryError as err:
            result.error = f"out of memory: {str(err).splitlines()[0]}"
        finally:
            if session is not None:
                release(session)  # before the run folder goes: its writers close into it
            del session
            free_memory(device)
    result.notices = reporter.notices
    return result


def time_steps(steps: TrainingSteps, batch: int, counts: LoopCounts, clock, result: RowResult) -> None:
    started = time.perf_counter()  # prepare_session has just returned
    steps()
    clock.sync()
    result.first_step_s = time.perf_counter() - started
    for _ in range(counts.warmup - 1):
        steps()
    marks = []
    for _ in range(counts.windows):
        start = clock.mark()
        for _ in range(counts.steps):
            steps()
        marks.append((start, clock.mark()))
    clock.sync()
    seconds = [clock.seconds(s, e) for s, e in marks]
    result.window_samples_per_s = [counts.steps * batch / s for s in seconds]
    result.samples_per_s = statistics.median(result.window_samples_per_s)
    result.step_ms = statistics.median(seconds) / counts.steps * 1000
    result.loss = steps.last_loss


def count_flops(steps: TrainingSteps) -> int:
    """FLOPs of one whole training step (forward and backward; the optimizer's elementwise work
    has no counted ops), by torch's FlopCounterMode, outside the timed windows."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        steps()
    return counter.get_total_flops()


@dataclass(frozen=True, slots=True)
class CachingResult:
    images: int
    resolution: int
    vae_batch_size: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def measure_latent_caching(cfg, device: torch.device) -> CachingResult:
    """engine.run.inputs.cache_latents over cfg's dataset with the model's VAE, as setup runs it:
    images read, resized and encoded in fp32 one VAE batch at a time."""
    from types import SimpleNamespace

    from engine.data.plan import make_plan
    from engine.models.loading import load_base_model
    from engine.run.inputs import cache_latents

    clock = clock_for(device)
    plan = make_plan(cfg)
    model = SimpleNamespace(vae=load_base_model(cfg.model.base_model).vae.to(device, dtype=torch.float32))
    free_memory(device)
    clock.sync()
    started = time.perf_counter()
    cache_latents(cfg, plan, model, None, NoticeReporter())
    clock.sync()
    seconds = time.perf_counter() - started
    del model
    free_memory(device)
    return CachingResult(len(plan.items), cfg.dataset.width_height[0], cfg.dataset.vae_batch_size, seconds)


def peak_gib(device: torch.device, *, reset: bool) -> float | None:
    if device.type != "cuda":
        return None  # the CPU has no allocator peak to read
    value = torch.cuda.max_memory_allocated(device) / GIB
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return value


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
