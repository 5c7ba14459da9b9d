"""Several processes through accelerate (2 gloo processes on the CPU: `ACCELERATE_USE_CPU=1
accelerate launch --multi_gpu --num_processes 2`, the launch that gives real distributed training
without GPUs).

One run over 2 processes with batch b must train what 1 process trains with batch 2b, write one
set of files, resume from its own states, and stop cleanly when one process fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.config.schema import TrainConfig
from engine.errors import ConfigError
from engine.events import SilentReporter
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from tests.support.patience import PATIENCE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
    pytest.skip("accelerate's launcher is not installed", allow_module_level=True)


def launch(tmp_path: Path, args: list[str], *, script: str = "run_wizard.py", port: int, timeout: float = PATIENCE):
    launcher = str(Path(sys.executable).parent / "accelerate")
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(ROOT / script), *args, "--no-report",  # the contact sheet is tests/test_report.py's
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)
    return proc, time.monotonic() - started


def write_config(tmp_path: Path, name: str, **changes) -> Path:
    data = {
        # SGD: its update is linear in the gradient, so float summation order stays a rounding error
        # (Adam divides by the gradient's own size and turns 1e-9 differences into lr-sized ones)
        "model": {"base_model": "builtin:demo"},
        "optim": {"optimizer": "SGDNesterov", "learning_rate": 0.5},
        "dataset": {"img_folder": "builtin:sample", "resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256},
        # one epoch of the sample dataset: 24 samples, a global batch of 2 -> 12 steps (not max_steps:
        # the step count must come from the plan made for the process count launched)
        "training": {"epochs": 1, "batch_size": 1},
        "saving": {"output_folder": str(tmp_path / name), "save_precision": "float"},
    }
    for dotted, value in changes.items():
        section, field = dotted.split("__")
        data.setdefault(section, {})[field] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def lora(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "last.safetensors")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = write_config(tmp, "two", saving__save_state=True, saving__save_every_n_steps=2)
    proc, seconds = launch(tmp, ["replay", str(cfg)], port=29611)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, proc


def test_two_processes_write_one_run_and_one_lora(two_process_run):
    tmp, proc = two_process_run
    runs = sorted(p.name for p in (tmp / "two").iterdir())
    assert runs == ["run1"]  # one folder: only the main process writes
    files = sorted(p.name for p in (tmp / "two" / "run1").iterdir())
    assert files.count("last.safetensors") == 1 and "last-step00000002-state" in files
    assert proc.stdout.count("done: 12/12 steps") == 1  # one report, from the main process, planned for 2


def test_two_processes_train_what_one_process_trains_with_twice_the_batch(two_process_run, tmp_path):
    tmp, _ = two_process_run
    single = TrainConfig.model_validate(json.loads(write_config(tmp_path, "one", training__batch_size=2).read_text()))
    (planned,) = preflight([("one", single)])
    assert planned.plan.total_steps == 12
    result = run_one(planned, SilentReporter())
    two, one = lora(tmp / "two" / "run1"), lora(result.run_dir)
    assert two.keys() == one.keys()
    # same samples, same noise, averaged gradients: equal up to float summation order
    scale = max(float(v.abs().max()) for k, v in one.items() if "lora_up" in k)
    worst = max(float((two[k] - one[k]).abs().max()) for k in two if "lora_up" in k)
    assert scale > 0 and worst <= 1e-4 * scale, (worst, scale)


def test_a_two_process_state_resumes_to_the_same_lora(two_process_run, tmp_path):
    tmp, _ = two_process_run
    state = tmp / "two" / "run1" / "last-step00000002-state"
    assert json.loads((state / "train_state.json").read_text())["num_processes"] == 2
    cfg = write_config(tmp_path, "resumed", saving__resume=str(state))
    proc, _ = launch(tmp_path, ["replay", str(cfg)], port=29612)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed, full = lora(tmp_path / "resumed" / "run1"), lora(tmp / "two" / "run1")
    assert all(torch.equal(resumed[k], full[k]) for k in full)


def test_resuming_a_two_process_state_with_one_process_is_refused(two_process_run, tmp_path):
    tmp, _ = two_process_run
    state = tmp / "two" / "run1" / "last-step00000002-state"
    cfg = TrainConfig.model_validate(json.loads(write_config(tmp_path, "one", saving__resume=str(state)).read_text()))
    with pytest.raises(ConfigError, match="2-process run"):  # refused by preflight, before any run
        preflight([("one", cfg)])


def test_a_fault_on_one_process_ends_the_run_with_its_message(tmp_path):
    cfg = write_config(tmp_path, "faulty", training__max_steps=50)
    proc, seconds = launch(tmp_path, ["1", "2", "replay", str(cfg)], script="tests/support/failing_rank.py", port=29613)
    assert proc.returncode != 0
    assert "injected fault on rank 1" in proc.stdout + proc.stderr
    assert seconds < 120  # no hang waiting for the failed process


def test_processes_that_are_not_connected_are_refused(monkeypatch):
    from engine.run.setup import check_launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="not connected"):
        check_launch(1)
    check_launch(2)


def test_ctrl_c_stops_both_processes_together_and_saves_a_resumable_state(tmp_path):
    """The launcher passes Ctrl-C to every process; they agree on the step to stop at (each may see
    it at a different step), the main one saves `-interrupted` and its state, and nobody hangs."""
    import signal

    cfg = write_config(tmp_path, "stopped", training__max_steps=3000, saving__save_state=True)
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29614",
        str(ROOT / "run_wizard.py"), "replay", str(cfg), "--no-report",
    ]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "stopped" / "run1"
    deadline = time.monotonic() + PATIENCE
    while not list(run.glob("*-tags.txt")) and time.monotonic() < deadline:  # written when training starts
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=PATIENCE)
    assert (run / "last-interrupted.safetensors").is_file(), out
    position = json.loads((run / "last-interrupted-state" / "train_state.json").read_text())
    assert position["num_processes"] == 2 and 0 < position["step"] < 3000
    assert position["step"] % 10 == 0  # the processes compare stop requests every 10 steps
    assert "stopped after step" in out
