"""The overnight queue: checked whole before the first run, failures isolated, --skip-invalid,
and a failed save that leaves no file. The journal, kill -9 and Ctrl-C: tests/test_queue_resume.py.

Training is replaced by a fake trainer given to the command line (`main(argv, trainer=...)`)
except in one test, where the run after a failed one trains the demo model for real.
"""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import pytest

from engine.errors import TrainingError
from engine.events import Outcome
from engine.queue.journal import (
    FOLDER_JOURNAL,
    LIST_JOURNAL,
    folder_configs,
    journal_path,
)
from engine.run.train import LossMeter
from tests.support.cli import one_line, run_cli, write_dataset
from tests.support.queue_fakes import (
    fake_train,
    journal,
    write_config,
)

pytestmark = pytest.mark.usefixtures("wide_console")



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
