"""Sweeps from one config: `replay CFG --set path=value --sweep path=v1,v2`. The grid's expansion,
its names, its validation, the dry run, and the folder queue it is trained as (with the journal,
so `queue --folder DIR --resume` carries on). Training is a fake trainer (tests/test_queue.py's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.schema import TrainConfig
from engine.errors import ConfigError
from engine.events import Outcome
from engine.queue.journal import FOLDER_JOURNAL
from engine.queue.sweep import (
    Change,
    apply_changes,
    expand,
    parse_sets,
    parse_sweeps,
    parse_value,
    point_name,
    split_values,
    write_grid,
)
from tests.support.cli import run_cli, write_dataset
from tests.support.queue_fakes import Recording, fake_train, journal, write_config

pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.fixture
def config(tmp_path) -> Path:
    return write_config(tmp_path / "configs", "mychar", write_dataset(tmp_path / "data"), tmp_path / "out")


def sweep_dirs(config: Path) -> list[Path]:
    return sorted(p for p in config.parent.iterdir() if p.is_dir() and "-sweep-" in p.name)


# ---------------------------------------------------------------------------------------- parsing


def test_values_are_json_where_they_can_be():
    assert [parse_value(v) for v in ("16", "1e-4", "true", "null", "[512, 768]", "AdamW", '"8"')] == [
        16, 1e-4, True, None, [512, 768], "AdamW", "8",
    ]
    assert split_values("1e-4,2e-4") == ["1e-4", "2e-4"]
    assert split_values('[512,768],640,"a,b"') == ["[512,768]", "640", '"a,b"']


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match=r"--set 'network.dim': write it as --set section.field=value"):
        parse_sets(["network.dim"])
    with pytest.raises(ConfigError, match=r"--sweep network.dim is given twice"):
        parse_sweeps(["network.dim=8", "network.dim=16"])
    with pytest.raises(ConfigError, match=r"each value once, none empty"):
        parse_sweeps(["network.dim=8,,16"])
    assert parse_sets(["network.dim=8", "network.dim=16"]) == [Change("network.dim", 16, "16")]


def test_a_change_is_validated_as_a_loaded_config():
    cfg = TrainConfig()
    assert apply_changes(cfg, parse_sets(["network.dim=16", "optim.unet_lr=2e-4"]), "x").network.dim == 16
    assert apply_changes(cfg, parse_sets(["optim.optimizer_args.weight_decay=0.1"]), "x").optim.optimizer_args == {"weight_decay": 0.1}
    with pytest.raises(ConfigError, match=r"x: network.dim = 0: Input should be greater than or equal to 1"):
        apply_changes(cfg, parse_sets(["network.dim=0"]), "x")
    with pytest.raises(ConfigError, match=r"x: network.dimm = 4: unknown key; did you mean network.dim\?"):
        apply_changes(cfg, parse_sets(["network.dimm=4"]), "x")
    with pytest.raises(ConfigError, match=r"optim.optimizer = \"Adamm\": not one of the choices"):
        apply_changes(cfg, parse_sets(["optim.optimizer=Adamm"]), "x")


# ------------------------------------------------------------------------------------------- grid


def test_the_grid_is_every_combination_in_order_with_the_sets():
    sweeps = parse_sweeps(["optim.unet_lr=1e-4,2e-4,4e-4", "network.dim=8,16"])
    points = expand(TrainConfig(), parse_sets(["network.alpha=4"]), sweeps, base_name="mychar")
    assert [p.name for p in points] == [
        "mychar-unet_lr=1e-4-dim=8", "mychar-unet_lr=1e-4-dim=16",
        "mychar-unet_lr=2e-4-dim=8", "mychar-unet_lr=2e-4-dim=16",
        "mychar-unet_lr=4e-4-dim=8", "mychar-unet_lr=4e-4-dim=16",
    ]
    assert [(p.config.optim.unet_lr, p.config.network.dim) for p in points] == [
        (1e-4, 8), (1e-4, 16), (2e-4, 8), (2e-4, 16), (4e-4, 8), (4e-4, 16),
    ]
    assert {p.config.network.alpha for p in points} == {4.0}
    assert [p.config.saving.output_name for p in points] == [p.name for p in points]


def test_names_from_a_template_are_safe_file_names():
    labels = {"dataset.resolution": "resolution", "optim.optimizer": "optimizer"}
    combo = [Change("dataset.resolution", [512, 768], "[512, 768]"), Change("optim.optimizer", "AdamW", "AdamW")]
    assert point_name("{name}-{changes}", "a", combo, labels, 3) == "a-resolution=[512,_768]-optimizer=AdamW"
    assert point_name("{index}_{optimizer}", "a", combo, labels, 3) == "03_AdamW"
    with pytest.raises(ConfigError, match=r"no placeholder \{dim\}; use \{name\}, \{changes\}, \{index\}"):
        point_name("{dim}", "a", combo, labels, 1)
    with pytest.raises(ConfigError, match=r"gives several runs the name a; put \{changes\} or \{index\} in it"):
        expand(TrainConfig(), [], parse_sweeps(["network.dim=8,16"]), base_name="a", template="{name}")


def test_every_bad_point_is_reported_together():
    with pytest.raises(ConfigError) as caught:
        expand(TrainConfig(), [], parse_sweeps(["network.dim=8,0,2000"]), base_name="a")
    text = str(caught.value)
    assert "the sweep cannot train (2 problems)" in text
    assert "sweep run a-dim=0: network.dim = 0" in text and "sweep run a-dim=2000: network.dim = 2000" in text


def test_the_grid_files_keep_the_grid_order_and_are_never_overwritten(tmp_path):
    points = expand(TrainConfig(), [], parse_sweeps(["network.dim=32,8,16"]), base_name="b")
    files = write_grid(points, tmp_path)
    assert [f.name for f in sorted(tmp_path.glob("*.json"))] == ["01-b-dim=32.json", "02-b-dim=8.json", "03-b-dim=16.json"]
    assert [json.loads(f.read_text())["network"]["dim"] for f in files] == [32, 8, 16]
    with pytest.raises(Exception, match="already exists"):
        write_grid(points, tmp_path)


# ----------------------------------------------------------------------------------- command line


def test_set_changes_the_replayed_config(config, capsys):
    seen = []

    def trainer(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        seen.append((cfg.network.dim, cfg.optim.unet_lr))
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)

    code, _ = run_cli(capsys, "replay", config, "--set", "network.dim=16", "--set", "optim.unet_lr=2e-4", trainer=trainer)
    assert code == Outcome.OK and seen == [(16, 2e-4)]
    saved = next((config.parent.parent / "out" / "run1").glob("mychar-*.json"))
    assert json.loads(saved.read_text())["network"]["dim"] == 16  # the run folder keeps what trained
    code, out = run_cli(capsys, "replay", config, "--set", "network.dim=abc", trainer=trainer)
    assert code == Outcome.BAD_INPUT and "network.dim" in out and "abc" in out and "Traceback" not in out


def test_dry_run_shows_the_grid_and_writes_nothing(config, capsys):
    code, out = run_cli(
        capsys, "replay", config, "--sweep", "optim.unet_lr=1e-4,2e-4,4e-4", "--sweep", "network.dim=8,16", "--dry-run"
    )
    assert code == Outcome.OK
    assert "sweep of" in out and "6 runs" in out
    for lr in ("1e-4", "2e-4", "4e-4"):
        for dim in (8, 16):
            assert f"mychar-unet_lr={lr}-dim={dim}" in out
    assert out.count("~") >= 6  # each run's disk estimate
    assert sweep_dirs(config) == [] and not (config.parent.parent / "out").exists()


def test_a_sweep_is_checked_before_the_first_run(config, capsys):
    calls = Recording()
    code, out = run_cli(capsys, "replay", config, "--sweep", "network.dim=8,0", trainer=calls)
    assert code == Outcome.BAD_INPUT and calls == [] and "mychar-dim=0" in out
    assert sweep_dirs(config) == []


def test_a_sweep_trains_as_a_folder_queue_and_resumes(config, capsys):
    """The third run is cut off (a second Ctrl-C); `queue --folder <sweep> --resume` trains the
    rest, and only the rest, in grid order."""
    calls, cut = Recording(), []

    def stopping(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        if cfg.saving.output_name == "mychar-unet_lr=2e-4-dim=16" and not cut:
            cut.append(cfg.saving.output_name)
            raise KeyboardInterrupt
        return calls(cfg, plan, run_dir, reporter, stop, resume_from)

    argv = ["replay", config, "--sweep", "optim.unet_lr=1e-4,2e-4", "--sweep", "network.dim=8,16"]
    code, out = run_cli(capsys, *argv, trainer=stopping)
    assert code == Outcome.CANCELLED
    (folder,) = sweep_dirs(config)
    assert f"queue --folder {folder} --resume" in out
    assert calls == ["mychar-unet_lr=1e-4-dim=8", "mychar-unet_lr=1e-4-dim=16", "mychar-unet_lr=2e-4-dim=8"] and cut
    states = {name: run["state"] for name, run in journal(folder / FOLDER_JOURNAL).items()}
    assert states == {
        "01-mychar-unet_lr=1e-4-dim=8": "done", "02-mychar-unet_lr=1e-4-dim=16": "done",
        "03-mychar-unet_lr=2e-4-dim=8": "done", "04-mychar-unet_lr=2e-4-dim=16": "interrupted",
    }
    calls.clear()
    code, out = run_cli(capsys, "queue", "--folder", folder, "--resume", trainer=stopping)
    assert code == Outcome.OK and calls == ["mychar-unet_lr=2e-4-dim=16"]
    assert sorted(p.name for p in (folder / "complete").glob("*.json")) == [
        "01-mychar-unet_lr=1e-4-dim=8.json", "02-mychar-unet_lr=1e-4-dim=16.json",
        "03-mychar-unet_lr=2e-4-dim=8.json", "04-mychar-unet_lr=2e-4-dim=16.json",
    ]
    runs = sorted((config.parent.parent / "out").glob("run*/*.safetensors"))
    assert sorted(p.stem for p in runs) == sorted(
        f"mychar-unet_lr={lr}-dim={dim}" for lr in ("1e-4", "2e-4") for dim in (8, 16)
    )


def test_name_needs_a_sweep(config, capsys):
    code, out = run_cli(capsys, "replay", config, "--name", "{index}")
    assert code == Outcome.BAD_INPUT and "--name names the runs of a --sweep" in out


def test_a_set_output_name_names_the_grid(config, capsys):
    code, out = run_cli(capsys, "replay", config, "--set", "saving.output_name=hero", "--sweep", "network.dim=4,8", "--dry-run")
    assert code == Outcome.OK and "hero-dim=4" in out and "hero-dim=8" in out and "mychar-dim" not in out
