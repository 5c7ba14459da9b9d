"""The built-in sample dataset: a handful of generated pictures with captions.

It lets the demo (and every test) train on a real folder in the kohya layout without any download:
`<root>/<repeats>_<name>/<image>.png` plus a `.txt` caption beside each image. Pictures differ in
aspect ratio so bucketing has something to do, and one image has no caption file so the folder-name
caption path runs too. Generated deterministically; written once, atomically, then reused.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

SAMPLE_VERSION = 1
FOLDER = "4_shapes"  # 4 repeats of the "shapes" concept
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40)}
SIZES = [(128, 128), (96, 128), (128, 96), (128, 128), (112, 128), (128, 80)]


def cache_root() -> Path:
    """Where generated assets live; LORA_WIZARD_HOME overrides (tests point it at a temp folder)."""
    return Path(os.environ.get("LORA_WIZARD_HOME") or Path.home() / ".cache" / "lora-wizard")


def _draw(size: tuple[int, int], shape: str, fg: tuple[int, int, int], bg: tuple[int, int, int], rng: random.Random):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    r = min(w, h) // 3
    cx, cy = w // 2 + rng.randint(-w // 8, w // 8), h // 2 + rng.randint(-h // 8, h // 8)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    else:
        draw.rectangle(box, fill=fg)
    return img


def write_sample_dataset(root: Path, seed: int = 0) -> Path:
    """Write the sample images and captions under `root/FOLDER`; returns `root`."""
    rng = random.Random(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i, size in enumerate(SIZES):
        shape = "circle" if i % 2 == 0 else "square"
        fg, bg = names[i % 4], names[(i + 2) % 4]
        img = _draw(size, shape, COLOURS[fg], COLOURS[bg], rng)
        img.save(folder / f"shape_{i:02d}.png")
        if i != len(SIZES) - 1:  # the last image has no caption: it gets the folder's class name
            caption = f"shapes, {fg} {shape}, {bg} background, simple, flat colours"
            (folder / f"shape_{i:02d}.txt").write_text(caption + "\n", encoding="utf-8")
    return root


def sample_dataset_dir() -> Path:
    """The sample dataset folder, generated on first use (atomically: a half-written one never shows)."""
    target = cache_root() / f"sample_dataset_v{SAMPLE_VERSION}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample-", dir=target.parent))
    try:
        write_sample_dataset(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
