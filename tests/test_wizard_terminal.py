"""The wizard in a real pseudo-terminal (pexpect): prompts render, a bad answer shows its reason under
the prompt, Enter takes the defaults, and the saved config's path is printed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.config.schema import TrainConfig
from wizard.questions import Draft, question_list

pexpect = pytest.importorskip("pexpect")

REPO = Path(__file__).resolve().parents[1]
PROGRAM = """
import sys
from pathlib import Path
from rich.console import Console
from wizard.flow import run_interactive
outcome = run_interactive(Console(), saved_configs_dir=Path(sys.argv[1]))
print("OUTCOME", outcome.action, len(outcome.configs), outcome.configs[0].network.dim)
"""


def test_wizard_in_a_terminal(tmp_path):
    # The order itself is tested in test_wizard_flow; here it only says how many Enters to type ahead.
    order = [q.path for q in Draft(TrainConfig(), question_list(loaded=False)).active()]
    before_dim, after_dim = order.index("network.dim"), len(order) - order.index("network.dim") - 1
    env = {
        "TERM": "xterm",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        # a bare pty never answers prompt_toolkit's cursor-position request: don't wait ~1 s for it
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-c", PROGRAM, str(tmp_path / "saved")],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=20,
        dimensions=(40, 120),
    )
    try:
        child.expect("Load a saved config")
        child.send("n")
        child.expect("tiny built-in model")  # the base model's help line
        child.expect("Base model")
        child.send("\r" * before_dim)
        child.expect("Network dim")
        child.send("\x150\r")
        child.expect("greater than or equal to 1")
        child.send("\x1516\r")
        child.expect("Network alpha")
        child.send("\r" * after_dim)
        child.expect("base_model")  # the review table
        child.expect(r"What now\?")
        child.expect("Train now")
        child.send("\r")
        child.expect("Saved")
        child.expect(r"OUTCOME (\w+) (\d+) (\d+)")
        assert child.match.groups() == ("train", "1", "16")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    [saved] = (tmp_path / "saved").iterdir()
    assert saved.suffix == ".json"
