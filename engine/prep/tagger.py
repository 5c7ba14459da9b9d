"""Tags from a WD14-style tagger (the SmilingWolf wd-*-tagger models) run with onnxruntime.

The user downloads a tagger folder once; nothing is fetched here. The folder holds `model.onnx`
and `selected_tags.csv` (columns tag_id,name,category,count; category 0 = general, 4 = character,
9 = rating), one CSV row per model output, in order. The facts follow kohya-ss/sd-scripts
finetune/tag_images_by_wd14_tagger.py (its --onnx path):

* input: NHWC float32, BGR, 0-255; the image is put on white (transparency too), padded to a
  square with white, centred, and resized to the model's input size, read from the ONNX input;
* output: one probability per label (the models end with a sigmoid);
* a general tag is kept at probability >= general threshold, a character tag at >= character
  threshold (0.35 each by default; above 1 turns a category off); ratings are not written;
* label text: underscores to spaces (not in kaomoji of up to three characters), then the
  replacements, then undesired tags are dropped; tags are written in label order, joined by ", ",
  with the always-first tags and then the trigger word moved to the front.

Resizing uses PIL (Lanczos when enlarging, box averaging when shrinking) where sd-scripts uses
OpenCV's area filter to shrink; the probabilities may differ in the last digits.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from engine.errors import MissingPackageError, ModelError
from engine.prep.tags import move_first, unique, wd14_underscores, with_trigger

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
TAGS_HEADER = ("tag_id", "name", "category")
DEFAULT_THRESHOLD = 0.35
_FOLDER_FIX = (
    f"a WD14 tagger folder holds {MODEL_FILE} and {TAGS_FILE}, as downloaded from a SmilingWolf "
    "wd-*-tagger repository"
)


class TagCategory(IntEnum):
    GENERAL = 0
    CHARACTER = 4
    RATING = 9


@dataclass(frozen=True, slots=True)
class TagLabel:
    name: str
    category: int


@dataclass(frozen=True)
class TaggerOptions:
    general_threshold: float = DEFAULT_THRESHOLD
    character_threshold: float = DEFAULT_THRESHOLD
    undesired: tuple[str, ...] = ()
    replacements: dict[str, str] = field(default_factory=dict)
    underscores_to_spaces: bool = True
    always_first: tuple[str, ...] = ()
    trigger: str | None = None
    batch_size: int = 1


# ---- the folder ----------------------------------------------------------------------------------


def check_tagger_folder(folder: Path) -> tuple[Path, Path]:
    """(model.onnx, selected_tags.csv) of a tagger folder; a ModelError saying what is missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelError(f"tagger folder {folder}: not a folder; {_FOLDER_FIX}")
    missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (folder / name).is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))[:8]
        found = f" (it holds: {', '.join(present)})" if present else " (it is empty)"
        raise ModelError(f"tagger folder {folder}: {' and '.join(missing)} missing{found}; {_FOLDER_FIX}")
    return folder / MODEL_FILE, folder / TAGS_FILE


def read_tag_list(path: Path) -> list[TagLabel]:
    """The labels of selected_tags.csv, in row order (= the model's output order)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read it ({exc}); re-download the tagger's {TAGS_FILE}") from None
    if not rows or tuple(c.strip() for c in rows[0][:3]) != TAGS_HEADER:
        header = ",".join(rows[0]) if rows else "(empty file)"
        raise ModelError(
            f"{path}: the first line is {header!r}, not the tag list header tag_id,name,category,count; "
            f"give the {TAGS_FILE} that came with the tagger"
        )
    labels = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            labels.append(TagLabel(row[1], int(row[2])))
        except (IndexError, ValueError):
            raise ModelError(f"{path}, line {number}: {','.join(row)!r} is not name and category number") from None
    if not labels:
        raise ModelError(f"{path}: no tags below the header; re-download the tagger's {TAGS_FILE}")
    return labels


# ---- the text rules (pure) -----------------------------------------------------------------------


def label_names(labels: Sequence[TagLabel], options: TaggerOptions) -> list[str]:
    """Each label as written into captions: underscores, then the user's replacements."""
    names = [wd14_underscores(label.name) if options.underscores_to_spaces else label.name for label in labels]
    return [options.replacements.get(name, name) for name in names]


def select_tags(probabilities: Sequence[float], labels: Sequence[TagLabel], names: Sequence[str], options: TaggerOptions) -> list[str]:
    """The caption tags for one image's probabilities."""
    undesired = set(options.undesired)
    if options.underscores_to_spaces:
        undesired |= {wd14_underscores(tag) for tag in options.undesired}
    thresholds = {TagCategory.GENERAL: options.general_threshold, TagCategory.CHARACTER: options.character_threshold}
    tags = []
    for label, name, p in zip(labels, names, probabilities, strict=True):
        threshold = thresholds.get(label.category)
        if threshold is not None and p >= threshold and name and name not in undesired:
            tags.append(name)
    tags = move_first(unique(tags), options.always_first)
    return with_trigger(tags, options.trigger)


def tag_line(tags: list[str]) -> str:
    return ", ".join(tags)


# ---- the model ------------------------------------------------------------------------------------


def load_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingPackageError(
            "the WD14 tagger needs onnxruntime: pip install 'lora-wizard[tagger]' (or pip install onnxruntime)"
        ) from None
    return onnxruntime


def preprocess(image, size: int):
    """A PIL image -> (size, size, 3) float32 BGR 0-255 array, padded to a square with white."""
    import numpy as np
    from PIL import Image

    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    side = max(width, height)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BOX if side > size else Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


class WD14Tagger:
    """A loaded tagger; `label` gives one caption line per image (engine.prep.label.Labeler)."""

    def __init__(self, folder: Path, options: TaggerOptions | None = None) -> None:
        self.options = options or TaggerOptions()
        model_path, tags_path = check_tagger_folder(folder)
        self.model_path = model_path
        self.labels = read_tag_list(tags_path)
        self.names = label_names(self.labels, self.options)
        ort = load_onnxruntime()
        settings = ort.SessionOptions()
        settings.log_severity_level = 3  # errors only: the optimiser's notes are not for the user
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=settings, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a broken file
            raise ModelError(f"{model_path}: onnxruntime cannot load it ({type(exc).__name__}: {exc}); re-download the tagger") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.size, fixed_batch = self._input_size(model_path, model_input.shape)
        self.batch_size = fixed_batch or self.options.batch_size
        self._fixed_batch = fixed_batch
        outputs = self.session.get_outputs()[0].shape
        if outputs and isinstance(outputs[-1], int) and outputs[-1] != len(self.labels):
            raise ModelError(self._count_mismatch(model_path, outputs[-1]))

    @staticmethod
    def _input_size(model_path: Path, shape: list) -> tuple[int, int | None]:
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
            raise ModelError(
                f"{model_path}: the model's input is {shape}, not [batch, size, size, 3] (NHWC colour images); "
                "give a WD14 tagger (SmilingWolf wd-*-tagger) model"
            )
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return shape[1], batch

    def _count_mismatch(self, model_path: Path, outputs: int) -> str:
        return (
            f"{model_path}: the model gives {outputs} scores but {TAGS_FILE} lists {len(self.labels)} tags; "
            "the two files must come from the same tagger download"
        )

    def probabilities(self, images: list):
        """(n, labels) probabilities for PIL images."""
        import numpy as np

        batch = np.stack([preprocess(image, self.size) for image in images])
        count = len(images)
        if self._fixed_batch and count < self._fixed_batch:  # a model exported for one batch size
            batch = np.concatenate([batch, np.repeat(batch[-1:], self._fixed_batch - count, axis=0)])
        scores = self.session.run(None, {self.input_name: batch})[0][:count]
        if scores.shape[-1] != len(self.labels):
            raise ModelError(self._count_mismatch(self.model_path, scores.shape[-1]))
        return scores

    def label(self, images: list) -> list[str]:
        return [tag_line(select_tags(row.tolist(), self.labels, self.names, self.options)) for row in self.probabilities(images)]
