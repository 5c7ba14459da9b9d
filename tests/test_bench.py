"""The GPU benchmark's harness, checked on the CPU: `python -m bench --smoke` runs the same code
path as the GPU rows with the tiny demo model; without CUDA a plain run says so and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.report import COLUMNS, default_json_path, format_table
from bench.rows import DEFAULT_ROWS, select_rows
from engine.config.schema import TrainOn
from tests.support.patience import PATIENCE

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ("samples_per_s", "step_ms", "flops_per_sample", "mfu", "first_step_s", "setup_s")


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE, check=False
    )


def test_smoke_prints_the_table_and_writes_numeric_json(tmp_path):
    path = tmp_path / "smoke.json"
    done = bench("--smoke", "--json", str(path))
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.lstrip().startswith("model"))
    for name, _ in COLUMNS:
        assert name in header
    assert "latent caching: 4 images at 256 px" in done.stdout

    doc = json.loads(path.read_text())
    assert doc["smoke"] is True and doc["complete"] is True
    assert doc["matmul_peak"]["tflops"] > 0
    assert doc["latent_caching"]["images_per_s"] > 0
    rows = doc["rows"]
    assert [(r["model"], r["train_on"], r["batch"]) for r in rows] == [
        ("demo", "both", 1),
        ("demo", "both", 2),
        ("demo", "unet_only", 2),
    ]
    for row in rows:
        assert row["error"] is None
        for key in MEASURED:
            assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
        assert len(row["window_samples_per_s"]) == doc["loop"]["windows"]
        # the peak is read from the CUDA allocator; a CPU has none to read
        assert (row["peak_gib"] is not None) == torch.cuda.is_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0():
    done = bench()
    assert done.returncode == 0
    assert "needs a CUDA GPU" in done.stdout
    assert "--smoke" in done.stdout
    assert "results:" not in done.stdout


def test_default_rows_are_the_issue_6_set():
    rows = [(r.model.name, r.resolution, r.train_on, r.batch) for r in select_rows(DEFAULT_ROWS, ["sd15", "sdxl"])]
    assert rows == [
        ("sd15", 512, TrainOn.BOTH, 1),
        ("sd15", 512, TrainOn.BOTH, 4),
        ("sd15", 512, TrainOn.BOTH, 8),
        ("sd15", 512, TrainOn.BOTH, 16),
        ("sd15", 512, TrainOn.UNET_ONLY, 1),
        ("sd15", 512, TrainOn.UNET_ONLY, 4),
        ("sdxl", 1024, TrainOn.UNET_ONLY, 1),
        ("sdxl", 1024, TrainOn.UNET_ONLY, 4),
    ]


def test_options_replace_batches_and_pick_a_text_encoder_setting():
    rows = select_rows(DEFAULT_ROWS, ["sdxl"], batches=(2,), train_on=TrainOn.BOTH)
    assert [(r.model.name, r.train_on, r.batch) for r in rows] == [("sdxl", TrainOn.BOTH, 2)]


def test_table_shows_missing_values_and_errors():
    record = {
        "model": "sdxl", "resolution": 1024, "train_on": "both", "batch": 16, "samples_per_s": None,
        "step_ms": None, "peak_gib": None, "flops_per_sample": None, "mfu": None, "first_step_s": None,
        "setup_s": 12.0, "error": "out of memory",
    }  # fmt: skip
    lines = format_table([record]).splitlines()
    assert len({len(lines[0]), len(lines[1])}) == 1  # header and rule line up
    assert lines[2].endswith("out of memory") and " - " in lines[2]


def test_results_are_never_overwritten(tmp_path):
    first = default_json_path(tmp_path, "2026-11-25", "NVIDIA H100 80GB HBM3", smoke=False)
    assert first.name == "2026-11-25-nvidia-h100-80gb-hbm3.json"
    first.write_text("{}")
    assert default_json_path(tmp_path, "2026-11-25", "NVIDIA H100 80GB HBM3", smoke=False).name.endswith("-2.json")
