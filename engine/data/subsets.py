"""The config's image folders, each with all its options resolved.

A config lists its folders in dataset.subsets (sd-scripts' DreamBooth subsets), or names a parent
folder whose `<repeats>_<name>` sub-folders are the subsets (sd-scripts' `train_data_dir` layout,
library/config_util.py `generate_dreambooth_subsets_config_by_subdirs`): the folder scan fills the
same list. A subset's caption option left unset is the dataset's, as in sd-scripts' fallback from a
subset to its dataset. Plain Python, no torch, no image reading: engine/data/layout.py scans the
`<repeats>_<name>` folders, engine/data/dataset.py reads the images of each folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import (
    SAMPLE_DATASET,
    DatasetConfig,
    SubsetConfig,
    TrainConfig,
)
from engine.data.captions import CaptionRules
from engine.data.layout import concept_subsets


@dataclass(frozen=True, slots=True)
class FolderSpec:
    """One folder to train, every option resolved."""

    image_dir: Path
    num_repeats: int
    class_tokens: str | None  # the caption of an image without a caption file (None: empty)
    is_reg: bool
    caption_extension: str
    rules: CaptionRules
    field: str  # where the folder comes from, for messages: "dataset.subsets[2]", "dataset.img_folder"


def resolve_img_folder(value: str) -> Path:
    if value == SAMPLE_DATASET:
        from engine.data.sample_data import sample_dataset_dir

        return sample_dataset_dir()
    return Path(value).expanduser()


def option(ds: DatasetConfig, subset: SubsetConfig | None, name: str):
    """A caption option of `subset`, else the dataset's."""
    value = getattr(subset, name) if subset is not None else None
    return getattr(ds, name) if value is None else value


def caption_rules(ds: DatasetConfig, subset: SubsetConfig | None = None) -> CaptionRules:
    def get(name: str):
        return option(ds, subset, name)

    return CaptionRules(
        shuffle=get("shuffle_caption"),
        keep_tokens=get("keep_tokens"),
        keep_tokens_separator=get("keep_tokens_separator") or None,
        separator=get("caption_separator"),
        secondary_separator=get("secondary_separator") or None,
        wildcard=get("enable_wildcard"),
        prefix=get("caption_prefix") or None,
        suffix=get("caption_suffix") or None,
        dropout_rate=get("caption_dropout_rate"),
        dropout_every_n_epochs=get("caption_dropout_every_n_epochs"),
        tag_dropout_rate=get("caption_tag_dropout_rate"),
        token_warmup_min=get("token_warmup_min"),
        token_warmup_step=get("token_warmup_step"),
    )


def all_caption_rules(cfg: TrainConfig) -> list[CaptionRules]:
    """The caption rules of every folder the config can train, without touching the disk."""
    ds = cfg.dataset
    if ds.subsets:
        return [caption_rules(ds, s) for s in ds.subsets]
    return [caption_rules(ds)]


def folder_specs(cfg: TrainConfig) -> list[FolderSpec]:
    """Every folder to train: dataset.subsets as listed, or the scanned `<repeats>_<name>` folders
    of dataset.img_folder and dataset.reg_img_folder (DatasetError for a bad layout)."""
    ds = cfg.dataset
    if ds.subsets:
        return [_spec(ds, s, f"dataset.subsets[{i}]") for i, s in enumerate(ds.subsets)]
    if ds.img_folder is None:
        return []
    listed = [(s, "dataset.img_folder") for s in concept_subsets(resolve_img_folder(ds.img_folder), is_reg=False)]
    if ds.reg_img_folder is not None:
        listed += [(s, "dataset.reg_img_folder") for s in concept_subsets(Path(ds.reg_img_folder).expanduser(), is_reg=True)]
    return [_spec(ds, s, where) for s, where in listed]


def _spec(ds: DatasetConfig, subset: SubsetConfig, where: str) -> FolderSpec:
    return FolderSpec(
        image_dir=Path(subset.image_dir).expanduser(),
        num_repeats=subset.num_repeats,
        class_tokens=subset.class_tokens,
        is_reg=subset.is_reg,
        caption_extension=option(ds, subset, "caption_extension"),
        rules=caption_rules(ds, subset),
        field=where,
    )
