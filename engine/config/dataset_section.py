"""The config's dataset section: the image folders (the `<repeats>_<name>` parent, or a list of
subsets, each with its own caption options), bucketing and the caption rules. Each field is checked
on its own; engine/config/rules.py checks them against each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from engine.config.strict import SAMPLE_DATASET, StrictModel


def _dot_extension(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(".") or len(value) < 2 or "/" in value or "\\" in value:
        raise ValueError(f"write it with its dot, like '.txt' or '.caption' (got {value!r})")
    return value


def _separator(value: str | None) -> str | None:
    if value is not None and not value:
        raise ValueError("a separator cannot be empty text; leave it out (null) for none")
    return value


#: the caption options a dataset sets for all its folders and a subset may set for its own
#: (sd-scripts' subset options, library/config_util.py: a subset's value, else the dataset's)
CAPTION_OPTIONS: tuple[str, ...] = (
    "caption_extension",
    "shuffle_caption",
    "keep_tokens",
    "keep_tokens_separator",
    "caption_separator",
    "secondary_separator",
    "enable_wildcard",
    "caption_prefix",
    "caption_suffix",
    "caption_dropout_rate",
    "caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate",
    "token_warmup_min",
    "token_warmup_step",
)


class SubsetConfig(StrictModel):
    """One folder of images (sd-scripts' DreamBooth subset). A caption option left out (null) is
    the dataset's."""

    image_dir: Path = Field(description="the folder that holds the images (and their caption files)")
    num_repeats: int = Field(1, ge=1, description="times each image is used per epoch")
    class_tokens: str | None = Field(None, description="the caption of an image without a caption file")
    is_reg: bool = Field(False, description="regularisation images (balanced against the training images)")
    caption_extension: str | None = None
    shuffle_caption: bool | None = None
    keep_tokens: int | None = Field(None, ge=0)
    keep_tokens_separator: str | None = None
    caption_separator: str | None = None
    secondary_separator: str | None = None
    enable_wildcard: bool | None = None
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float | None = Field(None, ge=0.0, le=1.0)
    caption_dropout_every_n_epochs: int | None = Field(None, ge=0)
    caption_tag_dropout_rate: float | None = Field(None, ge=0.0, le=1.0)
    token_warmup_min: int | None = Field(None, ge=0)
    token_warmup_step: float | None = Field(None, ge=0.0)

    _extension = field_validator("caption_extension")(lambda cls, value: _dot_extension(value))
    _separators = field_validator("keep_tokens_separator", "caption_separator", "secondary_separator")(
        lambda cls, value: _separator(value)
    )


class DatasetConfig(StrictModel):
    img_folder: str | None = Field(
        SAMPLE_DATASET,
        min_length=1,
        description="parent of the <repeats>_<name> folders, or builtin:sample; null when subsets lists the folders",
    )
    reg_img_folder: Path | None = Field(None, description="regularisation images, same layout")
    subsets: list[SubsetConfig] | None = Field(
        None, description="the image folders one by one, each with its repeats and caption options (instead of img_folder)"
    )
    prior_loss_weight: float = Field(1.0, ge=0.0, description="loss weight of regularisation samples")
    caption_extension: str = Field(".txt", description="caption file extension next to each image")
    resolution: int | tuple[int, int] = Field(
        512, description="training area: one side, or [width, height]"
    )
    enable_bucket: bool = Field(True, description="aspect-ratio bucketing")
    min_bucket_reso: int = Field(320, ge=32)
    max_bucket_reso: int = Field(960, ge=32)
    bucket_reso_steps: int = Field(64, ge=1, description="step between bucket sides (32 for SDXL)")
    bucket_no_upscale: bool = Field(False, description="never upscale an image to reach a bucket")
    shuffle_caption: bool = Field(False, description="shuffle comma-separated tags each time")
    keep_tokens: int = Field(0, ge=0, description="first N tags stay in place when shuffling")
    keep_tokens_separator: str | None = Field(
        None, description="tags before it (and after its second occurrence) stay in place, instead of keep_tokens"
    )
    caption_separator: str = Field(",", description="what separates the tags of a caption")
    secondary_separator: str | None = Field(
        None, description="joins tags that move as one; replaced by caption_separator after shuffling"
    )
    enable_wildcard: bool = Field(
        False, description="{a|b} picks one choice per use; a caption file's lines are alternatives"
    )
    caption_prefix: str | None = Field(None, description="text put before every caption")
    caption_suffix: str | None = Field(None, description="text put after every caption")
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    caption_dropout_every_n_epochs: int = Field(0, ge=0)
    caption_tag_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    token_warmup_min: int = Field(1, ge=0, description="tags used at step 0 of a token warm-up")
    token_warmup_step: float = Field(
        0.0, ge=0.0, description="steps until all tags are used (below 1: a share of the total steps); 0 is off"
    )
    weighted_captions: bool = Field(False, description="(word:1.3) emphasis in captions")
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    cache_latents: bool = Field(True, description="encode images with the VAE once, before training")
    cache_latents_to_disk: bool = Field(False, description="keep latent caches beside the images")
    vae_batch_size: int = Field(1, ge=1)
    max_data_loader_n_workers: int = Field(1, ge=0)
    persistent_data_loader_workers: bool = True

    @model_validator(mode="before")
    @classmethod
    def _subsets_replace_the_folder(cls, data: Any) -> Any:
        # a file that lists its folders does not also name the parent folder: img_folder's default
        # (the sample dataset) must not apply then
        if isinstance(data, dict) and data.get("subsets") and "img_folder" not in data:
            return {**data, "img_folder": None}
        return data

    @field_validator("caption_extension")
    @classmethod
    def _dot_extension(cls, value: str) -> str:
        return _dot_extension(value)  # type: ignore[return-value]

    _separators = field_validator("keep_tokens_separator", "caption_separator", "secondary_separator")(
        lambda cls, value: _separator(value)
    )

    @field_validator("resolution")
    @classmethod
    def _positive_resolution(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (value, value) if isinstance(value, int) else value
        if min(sides) < 64:
            raise ValueError(f"each side must be at least 64 pixels (got {value})")
        return value

    @property
    def width_height(self) -> tuple[int, int]:
        res = self.resolution
        return (res, res) if isinstance(res, int) else (res[0], res[1])
