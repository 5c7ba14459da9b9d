"""The wizard in a real pseudo-terminal (pexpect): prompts render, a bad answer shows its reason under
the prompt, Enter takes the defaults, and the saved config's path is printed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.config.schema import TrainConfig
from tests.support.patience import PATIENCE
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
        timeout=PATIENCE,
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


def terminal_env(**more: str) -> dict[str, str]:
    return {
        "TERM": "xterm",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "LORA_WIZARD_HOME": os.environ["LORA_WIZARD_HOME"],
        "HOME": os.environ.get("HOME", "/tmp"),
        **more,
    }


def spawn(tmp_path: Path, *args: str, columns: int = 80, **env: str):
    return pexpect.spawn(
        sys.executable, [str(REPO / "run_wizard.py"), *args], cwd=str(tmp_path), env=terminal_env(**env),
        encoding="utf-8", timeout=PATIENCE, dimensions=(30, columns),
    )


def test_chinese_in_an_80_column_terminal_with_back_and_a_refusal(tmp_path):
    order = [q.path for q in Draft(TrainConfig(), question_list(loaded=False)).active()]
    from_base = len(order)  # the base model's question and every one after it
    child = spawn(tmp_path, LANG="zh_CN.UTF-8")
    try:
        child.expect("读取已保存的配置")
        child.expect("是 y / 否 N")  # the yes/no keys, in Chinese
        child.send("n")
        child.expect("底模")
        child.send("\x15\r")  # empty: refused, the reason in Chinese under the prompt
        child.expect("请输入一个值")
        child.send("builtin:demo\r")
        child.expect("训练集文件夹")
        child.send("\x1b")  # Esc: back to the base model, its answer proposed again
        child.expect("底模")
        child.send("\r" * from_base)
        child.expect("你的训练配置")  # the review
        child.expect("接下来做什么")
        child.send("\x1b[B\x1b[B\r")  # save the config only
        child.expect("以后用这条命令训练它")
        child.expect(r"run_wizard\.py replay \S+\.json")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_japanese_draft_after_ctrl_c_is_continued_at_the_next_start(tmp_path):
    child = spawn(tmp_path, "--lang", "ja")
    try:
        child.expect("保存した設定")
        child.send("n")
        child.expect("ベースモデル")
        child.send("\r")
        child.expect("学習画像フォルダ")
        child.send("\x03")
        child.expect("下書きとして残しますか")
        child.send("y")
        child.expect("下書きを保存しました")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    child = spawn(tmp_path, "--lang", "ja")
    try:
        child.expect("の下書きがあります")
        child.expect("学習画像フォルダ")  # where it stopped
        child.send("\r")  # continue it
        child.expect("学習画像フォルダ")  # asked first: the base model was answered
        child.send("\x03")
        child.send("n")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130


def test_the_plan_fits_80_columns_with_the_output_path_whole(tmp_path):
    output = tmp_path / ("a_long_output_folder_name_" * 3) / "for_this_run"
    cfg = TrainConfig.model_validate({"saving": {"output_folder": str(output), "output_name": "mychar_v1"}})
    from engine.config.io import save_config

    path = save_config(cfg, tmp_path, name="mychar_v1")
    child = spawn(tmp_path, "replay", str(path), "--dry-run")
    try:
        child.expect(pexpect.EOF)
        text = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "…" not in text and f"{output}/run1/mychar_v1.safetensors" in text
