"""A time budget: `--finish-by 07:00` trains as many of each run's epochs as fit before then.

The budget is a limit, not a target: a run never trains more than its config says (set
training.epochs to the most you would want; the budget trains as many of them as fit). When the
whole queue fits, nothing changes. Otherwise every run keeps the same share of its epochs (or of
its steps, for a config with training.max_steps), the largest share at which the queue, run after
run from now, ends by the deadline; each run keeps at least one epoch (or step). The durations
are the estimates (engine/queue/estimate.py); the clock is a parameter, so tests need no waiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from engine.config.io import validated
from engine.data.plan import make_plan
from engine.errors import ConfigError
from engine.queue.estimate import Basis, Estimate, human_duration
from engine.queue.preflight import PlannedRun
from engine.run.cadence import planned_saves

_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def now() -> datetime:
    """The clock the budget reads (tests replace it)."""
    return datetime.now()


def parse_finish_by(text: str, at: datetime) -> datetime:
    """`HH:MM`: the next time the clock shows it (today, or tomorrow when it has passed)."""
    match = _CLOCK_TIME.match(text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ConfigError(f"--finish-by {text!r}: write a clock time as HH:MM, e.g. 07:00")
    deadline = at.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
    return deadline if deadline > at else deadline + timedelta(days=1)


@dataclass(frozen=True)
class Fitted:
    runs: list[PlannedRun]  # each with the epochs (or steps) it now trains
    notes: list[str]  # what was picked, run by run, for the user


def _cap(run: PlannedRun) -> tuple[int, str]:
    """(the most a run trains, in its unit): epochs, or steps for a max_steps config."""
    if run.config.training.max_steps is not None:
        return run.config.training.max_steps, "steps"
    return run.plan.epochs, "epochs"


def _steps(run: PlannedRun, count: int) -> int:
    return count if run.config.training.max_steps is not None else count * run.plan.steps_per_epoch


def fit_to_deadline(runs: list[PlannedRun], estimates: list[Estimate], start: datetime, deadline: datetime) -> Fitted:
    """The runs with the largest common share of their epochs that ends by `deadline`."""
    unknown = [run.source for run, est in zip(runs, estimates) if est.basis == Basis.UNKNOWN]
    if unknown:
        raise ConfigError(f"--finish-by needs the step time of {', '.join(unknown)}: measure it first with --measure")
    available = (deadline - start).total_seconds()
    caps = [_cap(run)[0] for run in runs]

    def counts(share: float) -> list[int]:
        return [max(1, int(cap * share + 1e-9)) for cap in caps]

    def total(share: float) -> float:
        return sum(est.for_steps(_steps(run, n)) for run, est, n in zip(runs, estimates, counts(share)))

    shares = sorted({k / cap for cap in caps for k in range(1, cap + 1)})  # where a count changes
    fits = _count_fitting(shares, lambda share: total(share) <= available)
    if fits == 0:
        ends = start + timedelta(seconds=total(0.0))
        raise ConfigError(
            f"--finish-by {deadline:%H:%M}: even one {_cap(runs[0])[1][:-1]} of each run takes until about {ends:%H:%M}; "
            "pick a later time, or train fewer runs"
        )
    chosen = counts(shares[fits - 1])
    fitted = [run if n == cap else with_count(run, n) for run, n, cap in zip(runs, chosen, caps)]
    notes = [_note(run, n, cap, est) for run, n, cap, est in zip(runs, chosen, caps, estimates)]
    ends = start + timedelta(seconds=total(shares[fits - 1]))
    notes.append(f"--finish-by {deadline:%H:%M}: the queue ends about {ends:%H:%M}")
    return Fitted(fitted, notes)


def _count_fitting(shares: list[float], fits) -> int:
    """How many of the ascending shares fit (the total grows with the share: a binary search)."""
    low, high = 0, len(shares)
    while low < high:
        middle = (low + high) // 2
        if fits(shares[middle]):
            low = middle + 1
        else:
            high = middle
    return low


def _note(run: PlannedRun, count: int, cap: int, est: Estimate) -> str:
    unit = _cap(run)[1]
    scaled = " (estimate, not measured yet)" if est.basis == Basis.SCALED else ""
    took = human_duration(est.for_steps(_steps(run, count)) or 0.0)
    if count == cap:
        return f"{run.source}: all {cap} {unit} fit (about {took}{scaled})"
    return f"{run.source}: trains {count} of its {cap} {unit}, what fits (about {took}{scaled})"


def with_count(run: PlannedRun, count: int) -> PlannedRun:
    """The run with `count` epochs (or steps), planned again: its plan, saves and disk estimate."""
    data = run.config.model_dump(mode="json")
    training = data["training"]
    if training["max_steps"] is not None:
        training["max_steps"] = count
    elif training["max_train_epochs"] is not None:
        training["max_train_epochs"] = count  # it overrides epochs
    else:
        training["epochs"] = count
    cfg, problems = validated(data)
    if cfg is None:
        raise ConfigError(f"{run.source}: {count} {_cap(run)[1]} break a rule: " + "; ".join(map(str, problems)))
    plan = make_plan(cfg, run.plan.num_processes)
    saves = planned_saves(cfg.saving, plan.epochs, plan.steps_per_epoch, plan.total_steps)
    size = run.output_bytes * saves // max(run.saves, 1)  # the disk estimate is linear in the saves
    return replace(run, config=cfg, plan=plan, saves=saves, output_bytes=size)
