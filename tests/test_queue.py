"""The overnight queue: checked whole before the first run, failures isolated, a journal that
survives kill -9, and Ctrl-C that saves and stops.

Training is replaced by a fake trainer given to the command line (`main(argv, trainer=...)`, in this
process or in a child process) except in one test, where the run after a failed one trains the
demo model for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from PIL import Image

from engine.config.schema import TrainConfig
from engine.errors import TrainingError
from engine.events import Outcome
from engine.queue.journal import (
    FOLDER_JOURNAL,
    LIST_JOURNAL,
    folder_configs,
    journal_path,
    queue_lock,
)
from engine.run.train import LossMeter
from tests.support.cli import one_line, run_cli
from tests.support.patience import PATIENCE

ROOT = Path(__file__).resolve().parent.parent

# The fake trainer, shared by the in-process tests and the child processes. FAKE_<NAME> picks how
# the run of the config with output_name <name> behaves: fast (default), slow (ignores stop
# requests: killed, or left by a second Ctrl-C) or polite (stops at a stop request, saving
# <name>-interrupted as engine/run/train.py does).
FAKE_TRAIN = """
import os, time
from engine.events import RunResult

def fake_train(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
    name = cfg.saving.output_name
    mode = os.environ.get("FAKE_" + name.upper(), "fast")
    step = 0
    while mode != "fast":
        time.sleep(0.02)
        step += 1
        if step == 5:
            (run_dir / "stepping").write_text("")
        if mode == "polite" and stop is not None and stop.requested:
            path = run_dir / (name + "-interrupted.safetensors")
            path.write_bytes(b"lora")
            return RunResult(run_dir, "interrupted", step, 10**6, [path], 1.0)
    path = run_dir / (name + ".safetensors")
    path.write_bytes(b"lora")
    return RunResult(run_dir, "done", 3, 3, [path], 0.1)
"""
CHILD = (
    "import sys\n"
    "sys.path.insert(0, {root!r})\n" + FAKE_TRAIN + "from wizard.app import main\n"
    "sys.exit(main(sys.argv[1:], trainer=fake_train))\n"
)
# A child that trains for real, a little slower: each optimizer step sleeps before it is logged, so
# the test's kill lands between state saves instead of racing a 12-step run that takes a second.
# Sleeping changes no number of the run.
REAL_CHILD = (
    "import sys, time\n"
    "sys.path.insert(0, {root!r})\n"
    "import engine.run.tracking\n"
    "rates = engine.run.tracking.learning_rates\n"
    "def slow_rates(optimizer):\n"
    "    time.sleep(0.25)\n"
    "    return rates(optimizer)\n"
    "engine.run.tracking.learning_rates = slow_rates\n"
    "from wizard.app import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_namespace: dict = {}
exec(FAKE_TRAIN, _namespace)
fake_train = _namespace["fake_train"]


# ------------------------------------------------------------------------------------------ helpers


pytestmark = pytest.mark.usefixtures("wide_console")


def write_dataset(root: Path) -> Path:
    sub = root / "3_thing"
    sub.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (96, 128), (40 * i, 90, 160)).save(sub / f"img{i}.png")
        (sub / f"img{i}.txt").write_text(f"thing, pose {i}", encoding="utf-8")
    return root


def write_config(folder: Path, name: str, data: Path, out: Path, **sections) -> Path:
    cfg = TrainConfig().model_dump(mode="json")
    cfg["dataset"].update(img_folder=str(data), resolution=128, min_bucket_reso=64, max_bucket_reso=256)
    cfg["saving"].update(output_folder=str(out), output_name=name)
    cfg["training"]["max_steps"] = 2
    cfg["optim"]["optimizer"] = "AdamW"
    for section, values in sections.items():
        cfg[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def queue_dir(tmp_path):
    """tmp/queue/{a,b,c}.json training tmp/data into tmp/out."""
    data = write_dataset(tmp_path / "data")
    for name in "abc":
        write_config(tmp_path / "queue", name, data, tmp_path / "out")
    return tmp_path / "queue"


def journal(path: Path) -> dict[str, dict]:
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    return {Path(r["config"]).stem: r for r in runs}


class Recording(list):
    """The fake trainer, recording the runs it trained (their output names) in order."""

    def __call__(self, cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        self.append(cfg.saving.output_name)
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)


@pytest.fixture
def calls():
    return Recording()


def start_child(tmp_path: Path, *argv, code: str = CHILD, **fake_modes) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(code.format(root=str(ROOT)), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **{f"FAKE_{k.upper()}": v for k, v in fake_modes.items()}}
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, argv)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )


def wait_until(condition, proc: subprocess.Popen, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the child exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.05)


def running_and_stepping(journal_file: Path, name: str):
    def check() -> bool:
        if not journal_file.exists():
            return False
        entry = journal(journal_file).get(name, {})
        return entry.get("state") == "running" and (Path(entry["run_dir"]) / "stepping").exists()

    return check


# ------------------------------------------------------------------------------------ preflight


def test_a_queue_with_one_broken_config_is_refused_whole(queue_dir, tmp_path, calls, capsys):
    broken_data = write_dataset(tmp_path / "broken")
    (broken_data / "3_thing" / "img0.txt").write_bytes(b"caf\xe9")  # latin-1, not UTF-8
    (broken_data / "thing2").mkdir()  # no repeats prefix
    write_config(queue_dir, "b", broken_data, tmp_path / "out")
    (queue_dir / "c.json").write_text('{"network": {"dim": 0}}', encoding="utf-8")

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)
    assert code == Outcome.BAD_INPUT and calls == []
    assert "3 problems" in out
    assert "b.json" in out and "img0.txt" in out and "UTF-8" in out and "'10_thing2'" in out
    assert "c.json" in out and "network.dim" in out
    assert "Traceback" not in out
    assert not (tmp_path / "out").exists() and not (queue_dir / FOLDER_JOURNAL).exists()
    assert sorted(p.name for p in queue_dir.iterdir()) == ["a.json", "b.json", "c.json"]


def test_preflight_checks_the_model_file_and_the_free_disk(queue_dir, tmp_path, calls, capsys, monkeypatch):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "model.safetensors"  # a LoRA given as the base model
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1)}, str(lora))
    write_config(queue_dir, "a", tmp_path / "data", tmp_path / "out", model={"base_model": str(lora)})
    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)
    assert code == Outcome.BAD_INPUT and "a.json" in out and "LoRA" in out

    write_config(queue_dir, "a", tmp_path / "data", tmp_path / "out", network={"dim": 128}, saving={"output_name": "a", "save_every_n_steps": 1})
    monkeypatch.setattr("engine.queue.preflight.shutil.disk_usage", lambda path: type("U", (), {"free": 5 << 20})())
    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)
    assert code == Outcome.BAD_INPUT and calls == []
    assert "only 5.0 MiB is free" in one_line(out) and "a.json, b.json, c.json" in one_line(out)


def test_dry_run_prints_the_plan_with_run_folders_and_writes_nothing(queue_dir, tmp_path, calls, capsys):
    (tmp_path / "out" / "run4").mkdir(parents=True)
    (tmp_path / "data" / "3_thing" / "img1.txt").unlink()
    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--dry-run", trainer=calls)
    assert code == Outcome.OK and calls == []
    for n, name in ((5, "a"), (6, "b"), (7, "c")):
        assert f"run{n}/{name}.safetensors" in out
    assert "1 of 2 images have no .txt caption" in " ".join(out.split())  # lint warnings are shown, not refused
    assert not (queue_dir / FOLDER_JOURNAL).exists() and not (tmp_path / "out" / "run5").exists()


# ------------------------------------------------------------------------------- isolation


def test_a_run_that_raises_is_isolated_and_the_next_one_trains_for_real(queue_dir, tmp_path, capsys, monkeypatch):
    from engine.run.train import train as real_train

    (queue_dir / "c.json").unlink()
    held = {}

    class BigModel:  # stands for the weights of the failed run
        pass

    def train(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        if cfg.saving.output_name == "a":
            model = BigModel()
            held["a"] = weakref.ref(model)
            (run_dir / "partial.bin").write_bytes(b"half")
            raise RuntimeError("boom in the middle of a")
        assert held["a"]() is None, "the failed run's memory is freed before the next run"
        return real_train(cfg, plan, run_dir, reporter, stop, resume_from)

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=train)
    assert code == Outcome.RUN_FAILED
    assert "boom in the middle of a" in out and "Traceback" not in out
    states = journal(queue_dir / FOLDER_JOURNAL)
    assert (states["a"]["state"], states["b"]["state"]) == ("failed", "done")
    assert states["b"]["steps"] == 2
    out_dir = tmp_path / "out"
    assert (out_dir / "run1" / "partial.bin").is_file()  # the failed run's folder is kept
    assert (out_dir / "run2" / "b.safetensors").is_file()
    assert sorted(p.name for p in (queue_dir / "failed").iterdir()) == ["a.error.txt", "a.json"]
    error = (queue_dir / "failed" / "a.error.txt").read_text(encoding="utf-8")
    assert "RuntimeError: boom" in error and "Traceback" in error  # a bug report has its traceback
    assert [p.name for p in (queue_dir / "complete").iterdir()] == ["b.json"]
    assert folder_configs(queue_dir) == []
    assert "queue summary" in out and "b.safetensors" in out


@pytest.mark.parametrize("kind", ["oom", "nan"])
def test_out_of_memory_and_nan_say_what_to_change(queue_dir, tmp_path, capsys, monkeypatch, kind):
    import torch

    write_config(queue_dir, "a", tmp_path / "data", tmp_path / "out", training={"max_steps": 2, "batch_size": 2})

    def train(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        if cfg.saving.output_name == "a":
            if kind == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            meter = LossMeter()
            meter.add(torch.tensor(float("nan")))
            meter.read(7)
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=train)
    assert code == Outcome.RUN_FAILED
    reason = journal(queue_dir / FOLDER_JOURNAL)["a"]["reason"]
    if kind == "oom":
        assert reason.startswith("out of memory (CUDA out of memory")
        # retried once at batch 1 (tests/test_oom_retry.py), then the advice for what is left to change
        for fix in ("gradient_checkpointing", "dataset.resolution (now 128x128)", "again after: out of memory at batch 2: retried with batch 1"):
            assert fix in reason
    else:
        assert "nan" in reason and "learning_rate" in reason and "mixed_precision" in reason
    assert reason in " ".join(out.split())
    assert sorted(p.name for p in (queue_dir / "complete").iterdir()) == ["b.json", "c.json"]


# ------------------------------------------------------------------------------ journal, resume


def test_kill_9_mid_run_then_resume_finishes_the_rest_once(queue_dir, tmp_path, calls, capsys):
    journal_file = queue_dir / FOLDER_JOURNAL
    child = start_child(tmp_path, "queue", "--folder", queue_dir, b="slow")
    wait_until(running_and_stepping(journal_file, "b"), child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=PATIENCE)
    states = journal(journal_file)
    assert [states[n]["state"] for n in "abc"] == ["done", "running", "pending"]
    assert (queue_dir / "complete" / "a.json").is_file()

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)  # a fresh queue would train b twice
    assert code == Outcome.BAD_INPUT and "--resume" in out and "b.json running" in out

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)
    assert code == Outcome.OK
    assert calls == ["b", "c"]  # a is not trained again, b and c once each
    states = journal(journal_file)
    assert [states[n]["state"] for n in "abc"] == ["done", "done", "done"]
    assert states["b"]["attempts"] == 2
    out_dir = tmp_path / "out"
    assert [Path(states[n]["run_dir"]).name for n in "abc"] == ["run1", "run3", "run4"]
    assert (out_dir / "run2" / "stepping").is_file()  # the killed attempt's folder is kept
    assert sorted(p.name for p in (queue_dir / "complete").iterdir()) == ["a.json", "b.json", "c.json"]
    assert "earlier" in out  # the summary shows a, trained by the killed process


def test_ctrl_c_once_saves_marks_interrupted_and_stops(queue_dir, tmp_path, calls, capsys):
    journal_file = queue_dir / FOLDER_JOURNAL
    child = start_child(tmp_path, "queue", "--folder", queue_dir, a="polite")
    wait_until(running_and_stepping(journal_file, "a"), child)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=PATIENCE)
    assert child.returncode == Outcome.CANCELLED
    assert "Traceback" not in out and "stopping after this step" in out and "--resume" in out
    states = journal(journal_file)
    assert [states[n]["state"] for n in "abc"] == ["interrupted", "pending", "pending"]
    assert "a-interrupted.safetensors" in [Path(f).name for f in states["a"]["files"]]
    assert [p.name for p in folder_configs(queue_dir)] == ["a.json", "b.json", "c.json"]  # still queued

    assert run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)[0] == Outcome.OK
    assert calls == ["a", "b", "c"]
    assert Path(journal(journal_file)["a"]["run_dir"]).name == "run2"  # run1 keeps the interrupted save


def test_ctrl_c_twice_leaves_at_once_without_a_traceback(queue_dir, tmp_path):
    journal_file = queue_dir / FOLDER_JOURNAL
    child = start_child(tmp_path, "queue", "--folder", queue_dir, a="slow")
    wait_until(running_and_stepping(journal_file, "a"), child)
    child.send_signal(signal.SIGINT)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=PATIENCE)
    assert child.returncode == Outcome.CANCELLED
    assert "Traceback" not in out and "stopped" in out
    entry = journal(journal_file)["a"]
    assert entry["state"] == "interrupted" and "second Ctrl-C" in entry["reason"]


def test_list_mode_journal_edited_configs_and_failed_runs(tmp_path, calls, capsys, monkeypatch):
    data = write_dataset(tmp_path / "data")
    a, b = (write_config(tmp_path / "cfgs", n, data, tmp_path / "out") for n in "ab")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(capsys, "queue", "--resume", trainer=calls)
    assert code == Outcome.BAD_INPUT and "nothing to resume" in out

    monkeypatch.setenv("FAKE_B", "polite")

    def fail_a(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        if cfg.saving.output_name == "a":
            calls.append("a")
            raise TrainingError("the loss became nan at step 3: lower optim.learning_rate")
        stop.request()  # as a first Ctrl-C during b
        return calls(cfg, plan, run_dir, reporter, stop, resume_from)

    assert run_cli(capsys, "queue", a, b, trainer=fail_a)[0] == Outcome.CANCELLED
    states = journal(journal_path(None, tmp_path))
    assert (states["a"]["state"], states["b"]["state"]) == ("failed", "interrupted")
    monkeypatch.delenv("FAKE_B")

    code, out = run_cli(capsys, "queue", a, b, trainer=calls)  # not finished: a fresh queue is refused
    assert code == Outcome.BAD_INPUT and "--resume" in out
    code, out = run_cli(capsys, "queue", "--resume", trainer=calls)  # the journal's own list: b only
    assert code == Outcome.OK
    assert calls == ["a", "b", "b"] and "edit it to train it again" in " ".join(out.split())
    write_config(tmp_path / "cfgs", "a", data, tmp_path / "out", optim={"optimizer": "AdamW", "learning_rate": 5e-5})
    code, out = run_cli(capsys, "queue", a, "--resume", trainer=calls)  # edited: a new run
    assert code == Outcome.OK and calls == ["a", "b", "b", "a"]
    runs = json.loads(journal_path(None, tmp_path).read_text(encoding="utf-8"))["runs"]
    assert [(Path(r["config"]).stem, r["state"]) for r in runs] == [("a", "failed"), ("b", "done"), ("a", "done")]
    assert run_cli(capsys, "queue", a, b, trainer=calls)[0] == Outcome.OK  # finished: a fresh queue may start
    assert calls[-2:] == ["a", "b"] and not (tmp_path / "cfgs" / "complete").exists()


def test_folder_mode_trains_a_config_put_back_or_added(queue_dir, tmp_path, calls, capsys):
    assert run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)[0] == Outcome.OK
    shutil.copy(queue_dir / "complete" / "b.json", queue_dir / "b.json")  # put back to train again
    write_config(queue_dir, "d", tmp_path / "data", tmp_path / "out")
    assert run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)[0] == Outcome.OK
    assert calls == ["a", "b", "c", "b", "d"]
    assert sorted(p.name for p in (queue_dir / "complete").iterdir()) == ["a.json", "b-2.json", "b.json", "c.json", "d.json"]


def test_a_second_queue_on_the_same_journal_is_refused(queue_dir, calls, capsys):
    with queue_lock(queue_dir / FOLDER_JOURNAL):
        code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)
    assert code == Outcome.BAD_INPUT and "another lora-wizard queue is running" in out and calls == []


def test_a_damaged_journal_is_named_with_the_fix(queue_dir, calls, capsys):
    (queue_dir / FOLDER_JOURNAL).write_text("{ half", encoding="utf-8")
    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)
    assert code == Outcome.BAD_INPUT and FOLDER_JOURNAL in out and "delete" in out and calls == []


# --------------------------------------------------------------------------------- exact resume


def logged_scalars(log_dir: Path, prefix: str) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the TensorBoard scalars under `log_dir` whose tag starts with `prefix`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"] if tag.startswith(prefix)
    }


def test_kill_9_then_resume_continues_from_the_last_state_exactly(tmp_path, capsys):
    """A real run killed after a state save; queue --resume goes on from that state and ends with
    the LoRA (and the LR at every step) of a run that was never stopped."""
    from safetensors.torch import load_file

    from engine.config.io import load_config
    from engine.events import SilentReporter
    from engine.queue.preflight import preflight
    from engine.queue.runner import run_one
    from engine.run.state import latest_state, read_position

    data = write_dataset(tmp_path / "data")
    queue = write_config(
        tmp_path / "queue", "r", data, tmp_path / "out",
        training={"max_steps": 12},
        saving={"save_state": True, "save_every_n_steps": 2},
        logging={"log_dir": str(tmp_path / "logs")},
    ).parent
    journal_file = queue / FOLDER_JOURNAL
    killed = tmp_path / "out" / "run1"

    def running_with_a_state() -> bool:
        return (
            journal_file.exists() and journal(journal_file)["r"]["state"] == "running" and any(killed.glob("r-step*-state"))
        )

    child = start_child(tmp_path, "queue", "--folder", queue, "--no-report", code=REAL_CHILD)
    wait_until(running_with_a_state, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=PATIENCE)
    assert journal(journal_file)["r"]["state"] == "running" and not (killed / "r.safetensors").exists()
    state = latest_state(killed)
    resumed_after = read_position(state).step
    assert 2 <= resumed_after < 12

    code, out = run_cli(capsys, "queue", "--folder", queue, "--resume", "--no-report")  # no contact sheet: seconds, not tested here
    assert code == Outcome.OK, out
    entry = journal(journal_file)["r"]
    assert (entry["state"], entry["steps"], entry["attempts"]) == ("done", 12, 2)
    resumed = Path(entry["run_dir"])
    assert resumed.name == "run2" and f"resuming from {state}" in out

    cfg = load_config(queue / "complete" / "r.json")  # the same config, never stopped
    cfg.saving.output_folder = str(tmp_path / "whole")
    cfg.logging.log_dir = str(tmp_path / "whole-logs")
    (planned,) = preflight([("whole", cfg)])
    whole = run_one(planned, SilentReporter())
    assert whole.status == "done" and whole.steps == 12

    ours, theirs = load_file(resumed / "r.safetensors"), load_file(whole.run_dir / "r.safetensors")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch_equal(ours[k], theirs[k])]
    assert different == [], f"{len(different)} of {len(ours)} tensors differ, e.g. {different[:3]}"

    resumed_lr = logged_scalars(tmp_path / "logs" / "r-run2", "lr/")
    whole_lr = logged_scalars(tmp_path / "whole-logs" / "r-run1", "lr/")
    assert whole_lr and resumed_lr.keys() == whole_lr.keys()
    for tag, values in whole_lr.items():
        assert sorted(values) == list(range(1, 13))
        assert sorted(resumed_lr[tag]) == list(range(resumed_after + 1, 13)), tag
        assert resumed_lr[tag] == {s: v for s, v in values.items() if s > resumed_after}, tag


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# ------------------------------------------------------------------------------ --skip-invalid


def test_skip_invalid_trains_the_valid_configs_and_records_the_invalid_one_failed(queue_dir, tmp_path, calls, capsys):
    write_config(queue_dir, "b", tmp_path / "missing", tmp_path / "out")  # a dataset path that is not there
    write_config(queue_dir, "d", tmp_path / "data", tmp_path / "out")

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, trainer=calls)
    assert code == Outcome.BAD_INPUT and calls == []
    assert "b.json" in out and str(tmp_path / "missing") in out
    assert not (tmp_path / "out").exists() and not (queue_dir / FOLDER_JOURNAL).exists()

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--skip-invalid", "--dry-run", trainer=calls)
    assert code == Outcome.BAD_INPUT and calls == [] and "1 of 4 configs cannot train" in out
    assert not (tmp_path / "out").exists() and not (queue_dir / FOLDER_JOURNAL).exists()

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--skip-invalid", trainer=calls)
    assert code == Outcome.BAD_INPUT, out  # nothing failed while training, but b was not trained
    assert calls == ["a", "c", "d"]
    assert "1 of 4 configs cannot train" in out and str(tmp_path / "missing") in out and "Traceback" not in out
    states = journal(queue_dir / FOLDER_JOURNAL)
    assert {n: states[n]["state"] for n in "abcd"} == {"a": "done", "b": "failed", "c": "done", "d": "done"}
    assert str(tmp_path / "missing") in states["b"]["reason"] and states["b"]["run_dir"] is None
    assert [Path(states[n]["run_dir"]).name for n in "acd"] == ["run1", "run2", "run3"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run1", "run2", "run3"]
    assert sorted(p.name for p in (queue_dir / "complete").iterdir()) == ["a.json", "c.json", "d.json"]
    assert sorted(p.name for p in (queue_dir / "failed").iterdir()) == ["b.error.txt", "b.json"]
    assert str(tmp_path / "missing") in (queue_dir / "failed" / "b.error.txt").read_text(encoding="utf-8")
    assert states["b"]["reason"] in " ".join(out.split())  # the summary says why

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--resume", trainer=calls)  # b is not retried unless put back
    assert code == Outcome.OK and calls == ["a", "c", "d"] and "b.json: failed before" in out


def test_skip_invalid_exits_1_when_a_valid_run_fails_while_training(queue_dir, tmp_path, capsys, monkeypatch):
    (queue_dir / "a.json").write_text("{ not json", encoding="utf-8")

    def train(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        if cfg.saving.output_name == "b":
            raise TrainingError("the loss became nan at step 1: lower optim.learning_rate")
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)

    code, out = run_cli(capsys, "queue", "--folder", queue_dir, "--skip-invalid", trainer=train)
    assert code == Outcome.RUN_FAILED and "1 of 3 configs cannot train" in out
    states = journal(queue_dir / FOLDER_JOURNAL)
    assert [states[n]["state"] for n in "abc"] == ["failed", "failed", "done"]
    assert "a.json" in states["a"]["reason"] and "nan" in states["b"]["reason"]
    assert sorted(p.name for p in (queue_dir / "failed").iterdir()) == ["a.error.txt", "a.json", "b.error.txt", "b.json"]


# ------------------------------------------------------------------------------- failed saves


def test_a_lora_save_whose_rename_fails_leaves_no_file_and_fails_the_run(queue_dir, tmp_path, capsys, monkeypatch):
    """A real run whose final LoRA save cannot be renamed into place (disk full at that moment):
    no last.safetensors, no temporary file, the run is failed with the error and the queue goes on."""
    import errno

    for name in "bc":
        (queue_dir / f"{name}.json").unlink()
    write_config(queue_dir, "a", tmp_path / "data", tmp_path / "out", saving={"output_name": None})
    replace = os.replace

    def no_space_for_loras(src, dst):
        if str(dst).endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", no_space_for_loras)
    code, out = run_cli(capsys, "queue", "--folder", queue_dir)
    assert code == Outcome.RUN_FAILED and "Traceback" not in out
    entry = journal(queue_dir / FOLDER_JOURNAL)["a"]
    assert entry["state"] == "failed" and "No space left on device" in entry["reason"]
    assert "free disk space" in entry["reason"] and "a bug" not in entry["reason"]
    run_dir = Path(entry["run_dir"])
    assert not (run_dir / "last.safetensors").exists() and (run_dir / "error.txt").is_file()
    assert [p.name for p in run_dir.iterdir() if "safetensors" in p.name] == []
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []
    assert "No space left on device" in (queue_dir / "failed" / "a.error.txt").read_text(encoding="utf-8")


def test_a_list_queue_keeps_its_journal_out_of_the_working_folder(tmp_path, calls, capsys, monkeypatch):
    data = write_dataset(tmp_path / "data")
    a = write_config(tmp_path / "cfgs", "a", data, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "queue", a, trainer=calls)[0] == Outcome.OK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfgs", "data", "out"]  # no journal here
    path = journal_path(None, tmp_path)
    assert path.parent == Path(os.environ["LORA_WIZARD_HOME"]) / "queues" and path.is_file()
    assert journal_path(None, tmp_path / "cfgs") != path  # one journal per working folder

    # an older version's journal in the working folder, with a run left: still carried on from there
    legacy = json.loads(path.read_text(encoding="utf-8"))
    legacy["runs"][0]["state"] = "interrupted"
    (tmp_path / LIST_JOURNAL).write_text(json.dumps(legacy), encoding="utf-8")
    assert journal_path(None, tmp_path) == tmp_path / LIST_JOURNAL
    assert run_cli(capsys, "queue", "--resume", trainer=calls)[0] == Outcome.OK
    assert calls == ["a", "a"] and journal(tmp_path / LIST_JOURNAL)["a"]["state"] == "done"
    assert journal_path(None, tmp_path) == path  # finished: new queues go to the home again
