"""The command line: demo, replay (with --dry-run), queue, and clear errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.io import save_config
from engine.config.schema import TrainConfig
from engine.events import Outcome
from tests.support.cli import config_file, run_cli, write_dataset
from tests.support.patience import PATIENCE

ROOT = Path(__file__).resolve().parent.parent


def test_demo_trains_and_says_where_the_files_are(tmp_path, capsys):
    code, out = run_cli(capsys, "demo", "--output", str(tmp_path / "demo"))
    assert code == Outcome.OK
    assert (tmp_path / "demo" / "run1" / "last.safetensors").is_file()
    assert "last.safetensors" in out and "done" in out
    # its contact sheet (tests/test_report.py): the one LoRA at 3 strengths, the default prompt
    html = (tmp_path / "demo" / "run1" / "last-report.html").read_text(encoding="utf-8")
    assert html.count("data:image/jpeg;base64,") == 3 and "shapes" in html
    assert (tmp_path / "demo" / "run1" / "last-report.png").is_file() and "last-report.html" in out


def test_replay_of_the_saved_config_trains_the_same_lora(tmp_path, capsys):
    # the defaults but 128 px (the sample dataset's latents cached 16 times faster than at 512)
    # and no contact sheet (tests/test_report.py): the bytes compared do not depend on either
    cfg = TrainConfig.model_validate(
        {"saving": {"output_folder": str(tmp_path / "a")}, "training": {"max_steps": 3}, "dataset": {"resolution": 128}}
    )
    saved = save_config(cfg, tmp_path)
    assert run_cli(capsys, "replay", str(saved), "--no-report")[0] == Outcome.OK
    run1 = tmp_path / "a" / "run1"
    (config_copy,) = run1.glob("*.json")  # the config saved beside the LoRA replays too
    assert run_cli(capsys, "replay", str(config_copy), "--no-report")[0] == Outcome.OK
    from safetensors.torch import load_file

    first, second = load_file(run1 / "last.safetensors"), load_file(tmp_path / "a" / "run2" / "last.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    path = config_file(tmp_path, dataset={"img_folder": str(data)}, training={"epochs": 3})
    code, out = run_cli(capsys, "replay", str(path), "--dry-run")
    assert code == Outcome.OK
    # 2 images x 3 repeats = 6 samples per epoch, batch 1: 6 steps an epoch, 18 in all
    assert "18" in out and "6" in out
    assert not (tmp_path / "out").exists()


def test_queue_checks_every_config_before_training_any(tmp_path, capsys):
    good = config_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"network": {"dim": 0}}', encoding="utf-8")
    code, out = run_cli(capsys, "queue", str(good), str(bad))
    assert code == Outcome.BAD_INPUT
    assert "network.dim" in out and "bad.json" in out
    assert not (tmp_path / "out").exists()  # the good one did not start either


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{ not json", "line 1"),
        ('{"network": {"dimm": 8}}', "network.dim"),
        ('{"network": {"dim": -4}}', "network.dim"),
    ],
)
def test_bad_config_files(tmp_path, capsys, content, expected):
    path = tmp_path / "x.json"
    path.write_text(content, encoding="utf-8")
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT
    assert expected in out and "x.json" in out
    assert "Traceback" not in out


def test_missing_config_file(tmp_path, capsys):
    code, out = run_cli(capsys, "replay", str(tmp_path / "nope.json"))
    assert code == Outcome.BAD_INPUT and "nope.json" in out


def test_missing_dataset_folder(tmp_path, capsys):
    path = config_file(tmp_path, dataset={"img_folder": str(tmp_path / "missing")})
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT
    assert "missing" in out and "dataset.img_folder" in out


def test_dataset_folder_without_repeat_prefix(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", folder="thing")
    path = config_file(tmp_path, dataset={"img_folder": str(data)})
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT
    assert "10_thing" in out  # the fix, spelled out


def test_empty_dataset(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    path = config_file(tmp_path, dataset={"img_folder": str(tmp_path / "data")})
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT and "empty" in out


def test_corrupt_image_is_named(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    (data / "3_thing" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = config_file(tmp_path, dataset={"img_folder": str(data)})
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT and "broken.png" in out


def test_missing_base_model(tmp_path, capsys):
    path = config_file(tmp_path, model={"base_model": str(tmp_path / "model.safetensors")})
    code, out = run_cli(capsys, "replay", str(path))
    assert code == Outcome.BAD_INPUT and "model.base_model" in out


def test_a_real_process_prints_no_traceback_and_exits_2(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"optim": {"learning_rate": "fast"}}', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_wizard.py"), "replay", str(path)],
        capture_output=True, text=True, timeout=PATIENCE, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "optim.learning_rate" in proc.stdout
