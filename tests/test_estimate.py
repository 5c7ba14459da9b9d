"""Estimates and the time budget: step times per kind of run, kept in the cache folder; a run's
duration from them (measured, scaled, unknown); `--finish-by` picking the epochs that fit, with a
fake clock (the budget's `now` is replaced: nothing waits); a run measuring itself, and --measure."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from engine.config.schema import TrainConfig
from engine.errors import ConfigError
from engine.events import Outcome, SilentReporter
from engine.queue import budget
from engine.queue.estimate import (
    Basis,
    Estimate,
    StepKey,
    StepTime,
    StepTimes,
    estimate,
    finish_times,
    human_duration,
)
from engine.queue.measure import key_of, measure_run, seconds_per_step
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from tests.support.cli import run_cli, write_dataset
from tests.support.queue_fakes import fake_train, write_config

NOW = datetime(2026, 3, 14, 22, 0)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own step-time table; the clock is 22:00."""
    monkeypatch.setenv("LORA_WIZARD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(budget, "now", lambda: NOW)
    monkeypatch.setenv("COLUMNS", "400")


def key(**changes) -> StepKey:
    base = {"family": "sd1", "width": 512, "height": 512, "batch": 2, "device": "GPU X", "network": "lora", "checkpointing": False, "precision": "fp16"}
    return StepKey(**(base | changes))


def table_with(*entries: tuple[StepKey, float, float]) -> StepTimes:
    table = StepTimes.load()
    for k, per_batch, setup in entries:
        table.put(k, StepTime(per_batch, setup, "2026-03-14T21:00:00", "measure"))
    return table


# ------------------------------------------------------------------------------------ estimates


def test_a_step_time_from_the_clock_readings():
    assert seconds_per_step([0.0, 1.0, 1.5, 2.0, 2.5]) == 0.5  # after the warm-up step
    # a GPU run: nine quick calls, then the loss read waits for the device (a sync every 10 steps)
    times, t = [], 0.0
    for step in range(1, 41):
        t += 2.0 if step == 1 else (0.1 if step % 10 else 9.1)  # 1 s per step on the device
        times.append(t)
    assert seconds_per_step(times) == pytest.approx(1.0)
    assert seconds_per_step([0.0, 1.0]) is None  # nothing timed after the warm-up


def test_measured_scaled_and_unknown():
    table = table_with((key(), 0.5, 30.0))
    measured = estimate(key(), 2, 100, table)
    assert (measured.basis, measured.seconds_per_step, measured.seconds) == (Basis.MEASURED, 1.0, 130.0)
    scaled = estimate(key(width=1024, height=1024), 1, 100, table)  # 4x the pixels
    assert (scaled.basis, scaled.seconds_per_step, scaled.seconds) == (Basis.SCALED, 2.0, 230.0)
    assert estimate(key(device="GPU Y"), 1, 100, table) == Estimate(None, Basis.UNKNOWN)
    assert estimate(key(family="sdxl"), 1, 100, table).basis == Basis.UNKNOWN


def test_the_table_is_a_file_in_the_cache_folder(tmp_path):
    table_with((key(), 0.5, 30.0)).save()
    path = tmp_path / "home" / "step-times.json"
    assert json.loads(path.read_text())["version"] == 1
    assert StepTimes.load().get(key()).seconds_per_batch == 0.5
    path.write_text("{broken", encoding="utf-8")
    assert StepTimes.load().entries == {}  # measured again, never a crash


def test_ends_and_durations():
    ends = finish_times(NOW, [60.0, 3600.0, None, 5.0])
    assert ends[:2] == [NOW + timedelta(minutes=1), NOW + timedelta(minutes=61)] and ends[2:] == [None, None]
    assert [human_duration(s) for s in (45, 12 * 60, 3 * 3600 + 5 * 60)] == ["45 s", "12 min", "3 h 05 min"]


# --------------------------------------------------------------------------------------- budget


def test_finish_by_is_the_next_such_time():
    assert budget.parse_finish_by("07:00", NOW) == datetime(2026, 3, 15, 7, 0)
    assert budget.parse_finish_by("23:30", NOW) == datetime(2026, 3, 14, 23, 30)
    with pytest.raises(ConfigError, match=r"--finish-by '7h': write a clock time as HH:MM"):
        budget.parse_finish_by("7h", NOW)


@pytest.fixture
def two_runs(tmp_path):
    """Two planned runs: 10 epochs of 2 steps, and 100 max_steps; 1 s and 3 s a step, no setup."""
    data = write_dataset(tmp_path / "data")  # 3 x 2 images, one bucket: 6 steps at batch 3
    runs = []
    for name, training in (("a", {"epochs": 10, "batch_size": 3}), ("b", {"max_steps": 100})):
        cfg = TrainConfig.model_validate({
            "dataset": {"img_folder": str(data), "resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256},
            "training": training, "saving": {"output_folder": str(tmp_path / "out"), "save_every_n_epochs": 1},
        })
        (run,) = preflight([(name, cfg)])
        runs.append(run)
    estimates = [Estimate(None, Basis.MEASURED, 1.0, 0.0), Estimate(None, Basis.MEASURED, 3.0, 0.0)]
    assert (runs[0].plan.steps_per_epoch, runs[0].plan.total_steps, runs[1].plan.total_steps) == (2, 20, 100)
    return runs, estimates


def test_a_queue_that_fits_is_unchanged(two_runs):
    runs, estimates = two_runs
    fitted = budget.fit_to_deadline(runs, estimates, NOW, NOW + timedelta(seconds=320))
    assert fitted.runs == runs
    assert fitted.notes == ["a: all 10 epochs fit (about 20 s)", "b: all 100 steps fit (about 5 min)", "--finish-by 22:05: the queue ends about 22:05"]


def test_the_largest_share_that_fits_is_picked(two_runs):
    runs, estimates = two_runs
    # 160 s: at 5/10 of each, a = 5 epochs x 2 steps (10 s) and b = 50 steps (150 s) make 160 s
    fitted = budget.fit_to_deadline(runs, estimates, NOW, NOW + timedelta(seconds=160))
    a, b = fitted.runs
    assert (a.config.training.epochs, a.plan.total_steps, a.saves) == (5, 10, 5)
    assert (b.config.training.max_steps, b.plan.total_steps) == (50, 50)
    assert a.output_bytes == runs[0].output_bytes // 2
    assert fitted.notes[:2] == ["a: trains 5 of its 10 epochs, what fits (about 10 s)", "b: trains 50 of its 100 steps, what fits (about 2 min)"]
    # a second less, and the share drops to the next count that changes: 49 steps of b
    fitted = budget.fit_to_deadline(runs, estimates, NOW, NOW + timedelta(seconds=159))
    assert [r.plan.total_steps for r in fitted.runs] == [8, 49]


def test_a_budget_that_nothing_fits_is_refused(two_runs):
    runs, estimates = two_runs
    with pytest.raises(ConfigError, match=r"even one epoch of each run takes until about 22:00"):
        budget.fit_to_deadline(runs, estimates, NOW, NOW + timedelta(seconds=4))
    with pytest.raises(ConfigError, match=r"--finish-by needs the step time of a: measure it first with --measure"):
        budget.fit_to_deadline(runs, [Estimate(None, Basis.UNKNOWN), estimates[1]], NOW, NOW + timedelta(hours=1))


# ----------------------------------------------------------------------------------- the command line


@pytest.fixture
def config(tmp_path) -> Path:
    data = write_dataset(tmp_path / "data")
    return write_config(tmp_path / "q", "night", data, tmp_path / "out", training={"max_steps": None, "epochs": 10, "batch_size": 3})


def measured_for(config: Path, per_batch: float, setup: float) -> None:
    from engine.config.io import load_config

    (run,) = preflight([("x", load_config(config))])
    table_with((key_of(run), per_batch, setup)).save()


def test_the_plan_shows_duration_and_end(config, capsys):
    code, out = run_cli(capsys, "replay", config, "--dry-run")
    assert code == Outcome.OK and "not measured yet" in out and "--measure" in out
    measured_for(config, 30.0, 60.0)  # 20 steps x 30 s + 60 s = 11 min
    code, out = run_cli(capsys, "replay", config, "--dry-run")
    assert "~11 min" in out and "22:11" in out and "measured" in out and "The queue ends about 22:11" in out


def test_finish_by_trains_what_fits_and_says_so(config, capsys):
    measured_for(config, 30.0, 60.0)  # an epoch is 2 steps, 1 min
    code, out = run_cli(capsys, "replay", config, "--finish-by", "22:05", "--dry-run")
    assert code == Outcome.OK
    assert "night.json: trains 4 of its 10 epochs, what fits (about 5 min)" in out
    assert "--finish-by 22:05: the queue ends about 22:05" in out
    trained = []

    def trainer(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        trained.append((cfg.training.epochs, plan.total_steps))
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)

    code, _ = run_cli(capsys, "replay", config, "--finish-by", "22:05", trainer=trainer)
    assert code == Outcome.OK and trained == [(4, 8)]
    code, out = run_cli(capsys, "replay", config, "--finish-by", "22:01", trainer=trainer)
    assert code == Outcome.BAD_INPUT and "even one epoch of each run takes until about 22:02" in out


# ----------------------------------------------------------------------------------- measuring


def small_run(tmp_path, **training):
    data = write_dataset(tmp_path / "data", folder="4_thing", images=2)
    cfg = TrainConfig.model_validate({
        "dataset": {"img_folder": str(data), "resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256},
        "optim": {"optimizer": "AdamW"},
        "training": training,
        "saving": {"output_folder": str(tmp_path / "out")},
    })
    (run,) = preflight([("small", cfg)])
    return run


def test_a_run_of_a_new_kind_measures_itself_once(tmp_path):
    run = small_run(tmp_path, max_steps=5)
    run_one(run, SilentReporter())
    kept = StepTimes.load().get(key_of(run))
    assert kept is not None and kept.how == "run" and 0 < kept.seconds_per_batch < 30
    run_one(run, SilentReporter())
    assert StepTimes.load().get(key_of(run)) == kept  # measured once and kept


def test_measure_times_the_loops_own_step_after_warm_up(tmp_path):
    ticks = iter(range(1000))
    clock = lambda: 0.5 * next(ticks)
    kept = measure_run(small_run(tmp_path), clock=clock)
    assert (kept.seconds_per_batch, kept.setup_seconds, kept.how) == (0.5, 0.5, "measure")


@pytest.mark.parametrize("typed, verdict", [("07:00", True), ("", True), (" 23:59 ", True), ("7h", "bad"), ("24:00", "bad")])
def test_the_finish_time_answer_is_checked(typed, verdict):
    from wizard import time_cmd

    assert time_cmd.finish_by_check({"finish_by": "Finish by?", "bad_time": "bad"})(typed) == verdict


def test_measure_on_the_command_line_fills_the_plan(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    config = write_config(tmp_path / "q", "m", data, tmp_path / "out", training={"max_steps": 4})
    code, out = run_cli(capsys, "replay", config, "--measure", "--dry-run")
    assert code == Outcome.OK and "measuring the step time of m.json" in out
    assert "not measured yet" not in out and "measured" in out and "The queue ends about" in out
    (kept,) = StepTimes.load().entries.values()
    assert kept.how == "measure" and not (tmp_path / "out").exists()  # a dry run trains nothing
