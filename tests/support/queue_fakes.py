"""The queue's test doubles: a fake trainer (in this process or in a child process started from
the command line), the configs and journals the queue tests read, and waiting for a child.

FAKE_<NAME> in a child's environment picks how the run of the config with output_name <name>
behaves: fast (default), slow (ignores stop requests: killed, or left by a second Ctrl-C) or
polite (stops at a stop request, saving <name>-interrupted as engine/run/train.py does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engine.config.schema import TrainConfig
from tests.support.cli import write_dataset
from tests.support.patience import PATIENCE

ROOT = Path(__file__).resolve().parents[2]

# The fake trainer, shared by the in-process tests and the child processes.
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


def queue_of_three(tmp_path: Path) -> Path:
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
