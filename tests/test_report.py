"""The contact sheet after a run (engine/report): every saved LoRA at strengths 0, 0.5 and 1 with
fixed seeds, the loss curve and the settings, in `<name>-report.html` (self-contained) and
`<name>-report.png`. A real demo-model run makes one through the command line; the page is then
rendered by headless Chromium where it is installed (the test says why it skips otherwise)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from engine.config.schema import TrainConfig
from engine.events import Outcome
from engine.report.draw import CELL, HEADER, LABEL_WIDTH, PAD, loss_curve
from engine.report.sheet import default_prompt, image_count, lora_files
from tests.support.cli import run_cli, write_dataset
from tests.support.patience import PATIENCE
from tests.support.queue_fakes import fake_train, write_config

pytestmark = pytest.mark.usefixtures("wide_console")


# ------------------------------------------------------------------------------------------ parts


def test_rows_are_the_saved_loras_in_order(tmp_path):
    cfg = TrainConfig.model_validate({"saving": {"output_name": "char"}})
    names = ["char-tags.txt", "char-000001.safetensors", "char-step00000010.safetensors", "char-000002-state",
             "char.safetensors", "char-2.safetensors", "char-interrupted.safetensors", "char-x.json"]
    for name in names:
        (tmp_path / name).mkdir() if name.endswith("-state") else (tmp_path / name).write_bytes(b"")
    rows = lora_files(cfg, [tmp_path / n for n in names])
    assert [(label, path.name) for label, path in rows] == [
        ("epoch 1", "char-000001.safetensors"), ("step 10", "char-step00000010.safetensors"),
        ("final", "char.safetensors"), ("final", "char-2.safetensors"), ("interrupted", "char-interrupted.safetensors"),
    ]


def test_without_sample_prompts_the_prompt_is_the_top_tags():
    prompt = default_prompt(["mychar, red dress, smile", "mychar, smile", "mychar, blue dress"])
    assert prompt.prompt == "mychar, smile, blue dress, red dress" and prompt.steps == 20
    assert image_count(prompts=2, files=3) == 14  # strength 0 once per prompt, 0.5 and 1 per file


def test_the_loss_curve_needs_two_reads():
    assert loss_curve([(10, 0.2)], 20, 10) is None
    curve = loss_curve([(10, 0.2), (20, 0.1)], 20, 10)
    pixels = np.asarray(curve)
    assert curve.size == (900, 320) and ((pixels[..., 0] > 150) & (pixels[..., 1] < 80)).sum() > 100  # the red line


# ---------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """The demo model, 2 epochs (a LoRA saved after each), through `replay`: the run's report."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_dataset(tmp / "data", folder="2_thing", images=2)
    config = write_config(
        tmp / "q", "sheet", data, tmp / "out",
        training={"max_steps": None, "epochs": 2}, saving={"save_every_n_epochs": 1}, optim={"learning_rate": 1e-2},
    )
    from wizard.app import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "400")
        code = main(["replay", str(config)])
    assert code == Outcome.OK
    return tmp / "out" / "run1"


def test_the_run_writes_a_self_contained_page_and_a_grid(report_run):
    html = (report_run / "sheet-report.html").read_text(encoding="utf-8")
    assert "<table class=\"grid\" id=\"grid\">" in html
    assert html.count("src=\"data:image/jpeg;base64,") == 2 * 3  # 2 files x 1 prompt x 3 strengths
    assert html.count("src=\"data:image/png;base64,") == 1  # the loss curve
    assert not re.search(r"(src|href)=\"(?!data:)", html)  # nothing outside the file
    for text in ("epoch 1", "final", "sheet-000001.safetensors", "strength 0.5", "thing, pose 0", "AdamW", "dim 32 / alpha 16"):
        assert text in html
    grid = Image.open(report_run / "sheet-report.png")
    assert grid.size == (LABEL_WIDTH + 3 * (CELL + PAD) + PAD, HEADER + 2 * (CELL + PAD) + PAD)


def cell(grid: Image.Image, row: int, column: int) -> np.ndarray:
    left, top = LABEL_WIDTH + column * (CELL + PAD) + PAD, HEADER + row * (CELL + PAD)
    return np.asarray(grid.crop((left, top, left + CELL, top + CELL)), dtype=np.int16)


def test_strength_zero_is_the_base_model_and_the_lora_shows(report_run):
    grid = Image.open(report_run / "sheet-report.png").convert("RGB")
    assert np.array_equal(cell(grid, 0, 0), cell(grid, 1, 0))  # the same base image in every row
    assert np.abs(cell(grid, 1, 2) - cell(grid, 1, 0)).mean() > 1  # the final LoRA at 1.0 changes it
    assert not np.array_equal(cell(grid, 0, 2), cell(grid, 1, 2))  # two epochs, two pictures
    assert cell(grid, 0, 0).std() > 5  # a picture, not an empty cell


def test_a_report_that_cannot_be_made_is_a_note_not_a_failure(tmp_path, capsys):
    config = write_config(tmp_path / "q", "junk", write_dataset(tmp_path / "data"), tmp_path / "out")
    code, out = run_cli(capsys, "replay", config, trainer=fake_train)  # its LoRA is 4 bytes of junk
    assert code == Outcome.OK
    assert "no contact sheet: ModelError:" in out and "junk.safetensors" in out
    code, out = run_cli(capsys, "replay", config, "--no-report", trainer=fake_train)
    assert code == Outcome.OK and "contact sheet" not in out


# ------------------------------------------------------------------------------ in a real browser


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (apt-get install chromium); the page is checked without a browser above")
def test_the_page_renders_in_headless_chromium(report_run, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1000,900", (report_run / "sheet-report.html").as_uri()],
        check=True, capture_output=True, timeout=PATIENCE,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.std() > 10  # not a blank page
    # the grid: its images are the only colourful pixels of the page (text and lines are grey)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 40
    rows, cols = np.nonzero(colourful)
    assert colourful.sum() > 3 * 150 * 150  # the three images of the first row at least, 200 px wide
    assert rows.min() < 400 and cols.max() - cols.min() > 500  # near the top, spread over three columns
