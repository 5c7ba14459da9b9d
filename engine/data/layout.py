"""The kohya folder layout (sd-scripts' "DreamBooth" style): the dataset folder holds sub-folders
named `<repeats>_<name>`; each image in one is used `repeats` times per epoch, and an image without
a caption file is captioned with `<name>`. Regularisation folders have the same layout. Plain
Python: the names are read, no image is opened.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.config.schema import SubsetConfig
from engine.errors import DatasetError, problems_message

#: the image files a folder's images are read from (what PIL reads and sd-scripts trains on)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: `<repeats>_<name>`: the repeat count, then the class name
SUBSET_NAME = re.compile(r"^(\d+)_(.*)$")


def concept_subsets(root: Path, *, is_reg: bool = False) -> list[SubsetConfig]:
    """The `<repeats>_<name>` folders under `root` as subsets (repeats, class name), checked for
    their layout only. All problems at once."""
    kind = "regularisation folder" if is_reg else "dataset folder"
    field = "dataset.reg_img_folder" if is_reg else "dataset.img_folder"
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{field}: {root} is not a folder; give the parent of the <repeats>_<name> folders")
    problems: list[str] = []
    subsets: list[SubsetConfig] = []
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose_images = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    for child in children:
        match = SUBSET_NAME.match(child.name)
        if not match or int(match.group(1)) < 1:
            problems.append(
                f"{child}: the folder name must start with the repeat count, like '10_{child.name}' "
                "(each image is then used 10 times per epoch)"
            )
            continue
        subsets.append(SubsetConfig(image_dir=child, num_repeats=int(match.group(1)), class_tokens=match.group(2).strip(), is_reg=is_reg))
    if not children and loose_images:
        problems.append(
            f"{root}: the images are directly in the {kind}; move them into a sub-folder named like "
            f"'10_{root.name}' (10 = repeats per epoch) and select {root} again"
        )
    elif not subsets and not problems:
        problems.append(f"{root}: empty {kind}; it needs sub-folders like '10_mycharacter' with images inside")
    if problems:
        raise DatasetError(problems_message(f"{field} {root}", problems))
    return subsets
