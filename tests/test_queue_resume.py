"""The queue's journal: it survives kill -9 (in list and folder mode, with the exact resume of a
real run from its last state), Ctrl-C saves and stops, a second Ctrl-C leaves at once, and a second
queue on the same journal or a damaged journal is refused.

Training is replaced by a fake trainer in a child process, except in the exact-resume test.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from engine.errors import TrainingError
from engine.events import Outcome
from engine.queue.journal import (
    FOLDER_JOURNAL,
    folder_configs,
    journal_path,
    queue_lock,
)
from tests.support.cli import run_cli, write_dataset
from tests.support.patience import PATIENCE
from tests.support.queue_fakes import (
    REAL_CHILD,
    journal,
    running_and_stepping,
    start_child,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.usefixtures("wide_console")



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


