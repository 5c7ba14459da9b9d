"""Shared helpers for tests that go through the command line: a dataset, a config file, a run."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from engine.config.schema import TrainConfig
from wizard.app import main


def write_dataset(root: Path, folder: str = "3_thing", images: int = 2, size: tuple[int, int] = (96, 128)) -> Path:
    """`root/<folder>/img<i>.png` with a caption each; returns `root` (the dataset folder)."""
    sub = root / folder
    sub.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", size, (40 * i, 90, 160)).save(sub / f"img{i}.png")
        (sub / f"img{i}.txt").write_text(f"thing, pose {i}", encoding="utf-8")
    return root


def config_file(tmp_path: Path, name: str = "cfg.json", **sections) -> Path:
    """A saved config (the defaults, output under tmp_path) with `sections` updated, not validated:
    tests give it what a user might write."""
    data = TrainConfig().model_dump(mode="json")
    data["saving"]["output_folder"] = str(tmp_path / "out")
    for section, values in sections.items():
        data[section].update(values)
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run_cli(capsys, *argv: str | Path, trainer=None) -> tuple[int, str]:
    """The exit code and everything printed; `trainer` stands in for the engine's trainer."""
    code = main([str(a) for a in argv], trainer=trainer)
    out = capsys.readouterr()
    return code, out.out + out.err


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces as single spaces: what a sentence says, however
    the console wrapped it (the wrap depends on the width and on how long the paths are)."""
    return " ".join(text.split())
