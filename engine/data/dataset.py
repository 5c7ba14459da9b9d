"""The training set: read each folder's images, apply repeats and regularisation balancing.

The folders come from engine/data/subsets.py (the config's dataset.subsets, or the
`<repeats>_<name>` folders that engine/data/layout.py scans); each image in one is used `repeats`
times per epoch, and an image without a caption file is captioned with the folder's class tokens.

Everything here is plain Python (PIL for image sizes): no torch, so a queue can scan every dataset
before the first run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.data.captions import CaptionRules
from engine.data.layout import IMAGE_EXTENSIONS, SUBSET_NAME
from engine.errors import DatasetError, problems_message

if TYPE_CHECKING:
    from engine.data.subsets import FolderSpec



@dataclass(frozen=True, slots=True)
class ImageRecord:
    path: Path
    caption_path: Path | None  # None: the folder's class name is the caption
    class_caption: str
    subset: str  # the folder's name, as metadata (ss_dataset_dirs) knows it
    repeats: int
    is_reg: bool
    width: int
    height: int
    rules: CaptionRules = CaptionRules()  # the folder's caption options


@dataclass(frozen=True, slots=True)
class Subset:
    folder: Path
    repeats: int
    class_caption: str
    images: tuple[ImageRecord, ...]
    is_reg: bool


def image_size(path: Path) -> tuple[int, int]:
    """Width and height from the file header; an unreadable image is a DatasetError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: cannot read this image ({exc}); remove it or re-save it as PNG/JPEG") from None


def load_subset(spec: FolderSpec) -> tuple[Subset | None, list[str]]:
    """The images of one folder (sizes from their headers, caption files found), or the problems."""
    folder = spec.image_dir
    if not folder.is_dir():
        return None, [f"{spec.field}: {folder} is not a folder; give the folder that holds the images"]
    problems: list[str] = []
    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        try:
            width, height = image_size(path)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        caption = path.with_suffix(spec.caption_extension)
        images.append(
            ImageRecord(
                path=path,
                caption_path=caption if caption.is_file() else None,
                class_caption=spec.class_tokens or "",  # sd-scripts: no caption and no class tokens is ""
                subset=folder.name,
                repeats=spec.num_repeats,
                is_reg=spec.is_reg,
                width=width,
                height=height,
                rules=spec.rules,
            )
        )
    if not images and not problems:
        hint = ""
        if spec.field.startswith("dataset.subsets") and any(p.is_dir() and SUBSET_NAME.match(p.name) for p in folder.iterdir()):
            hint = " (it holds <repeats>_<name> folders: name it in dataset.img_folder instead)"
        problems.append(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder{hint}; add some or remove it")
    if problems:
        return None, problems
    return Subset(folder, spec.num_repeats, spec.class_tokens or "", tuple(images), spec.is_reg), []


def load_subsets(specs: list[FolderSpec]) -> list[Subset]:
    """Every folder's images; all problems of all folders in one DatasetError."""
    subsets, problems = [], []
    for spec in specs:
        subset, found = load_subset(spec)
        problems += found
        if subset is not None:
            subsets.append(subset)
    if problems:
        raise DatasetError(problems_message("the dataset's folders", problems))
    return subsets


def train_image_count(subsets: list[Subset]) -> int:
    """sd-scripts' num_train_images: images x repeats, summed."""
    return sum(s.repeats * len(s.images) for s in subsets)


def balance_regularisation(train_count: int, reg_subsets: list[Subset]) -> list[tuple[ImageRecord, int]]:
    """How many times each regularisation image is used per epoch, as sd-scripts balances them.

    The first pass registers each reg image with its folder's repeats; further passes add one use
    at a time, round robin, until the reg total reaches the training total. Reg images that are
    not needed are dropped (sd-scripts warns about them; so do we, through the plan).
    """
    uses: dict[int, int] = {}
    images = [img for s in reg_subsets for img in s.images]
    if not images or train_count == 0:
        return []
    total = 0
    first_pass = True
    while total < train_count:
        for idx, img in enumerate(images):
            if total >= train_count:
                break
            step = img.repeats if first_pass else 1
            uses[idx] = uses.get(idx, 0) + step
            total += step
        first_pass = False
    return [(images[i], n) for i, n in sorted(uses.items())]


def batches_per_epoch(bucket_counts: dict[tuple[int, int], int], batch_size: int) -> int:
    """sd-scripts' len(train_dataloader): batches are drawn within one bucket."""
    return sum(math.ceil(count / batch_size) for count in bucket_counts.values())
