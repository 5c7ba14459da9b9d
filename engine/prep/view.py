"""The dataset as training will see it, before training: the numbers of the run's own plan.

Everything is computed by the functions training uses, so the view cannot disagree with the run:
`engine.data.plan.make_plan` (folders, repeats, regularisation balancing, buckets, steps) and
`engine.data.captions.read_caption` / `count_tags` (each image's caption, its file or its folder's
name, and the tag counts written into the LoRA as ss_tag_frequency, grouped as
`engine.run.metadata.tag_frequency` does; the tests check the two agree). No torch is imported, so the
wizard can show the view between two questions. On top of them it lists what a user should look at before starting: images
without a caption file (they are captioned with their folder's name), the most frequent tags (the
candidates for a trigger word) and the images that will be enlarged to reach their bucket.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan, make_plan

#: an image enlarged more than this to fill its bucket will look soft: listed as too small
MAX_UPSCALE = 2.0


@dataclass(frozen=True, slots=True)
class FolderSummary:
    folder: Path
    repeats: int
    images: int
    uses: int  # images x repeats; for a regularisation folder, its uses after balancing
    missing_captions: tuple[Path, ...]  # images captioned with the folder's name
    is_reg: bool

    @property
    def name(self) -> str:
        return self.folder.name


@dataclass(frozen=True, slots=True)
class ResizedImage:
    path: Path
    size: tuple[int, int]
    bucket: tuple[int, int]
    scale: float  # > 1: enlarged
    too_small: bool  # enlarged more than MAX_UPSCALE, or below the smallest bucket without upscaling


@dataclass(frozen=True)
class DatasetSummary:
    root: Path | None  # None when dataset.subsets lists the folders
    resolution: tuple[int, int]
    enable_bucket: bool
    no_upscale: bool
    folders: tuple[FolderSummary, ...]
    num_train_images: int
    num_reg_images: int
    unused_reg_images: int
    bucket_counts: dict[tuple[int, int], int]
    batch_size: int
    steps_per_epoch: int
    captions_read: int  # training images (each has a caption: its file or its folder's name)
    top_tags: tuple[tuple[str, int], ...]
    upscaled: tuple[ResizedImage, ...]  # enlarged, not too small
    too_small: tuple[ResizedImage, ...]
    plan: RunPlan

    @property
    def missing_captions(self) -> int:
        return sum(len(f.missing_captions) for f in self.folders if not f.is_reg)


def summarize(cfg: TrainConfig, top: int = 20) -> DatasetSummary:
    """The summary of `cfg`'s dataset (and regularisation) folders at `cfg`'s bucket settings."""
    from engine.data.captions import count_tags, read_caption

    plan = make_plan(cfg)
    ds = cfg.dataset
    uses: Counter[Path] = Counter()
    for item in plan.items:
        uses[item.record.path.parent] += item.uses
    folders = tuple(
        FolderSummary(
            folder=s.folder,
            repeats=s.repeats,
            images=len(s.images),
            uses=uses[s.folder],
            missing_captions=tuple(img.path for img in s.images if img.caption_path is None),
            is_reg=s.is_reg,
        )
        for s in (*plan.subsets, *plan.reg_subsets)
    )
    training = [item.record for item in plan.items if not item.record.is_reg]
    captions = [read_caption(r.caption_path, all_lines=r.rules.wildcard) if r.caption_path else r.class_caption for r in training]
    counts = count_tags(captions)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    resized = [_resized(item, ds.enable_bucket and ds.bucket_no_upscale, ds.min_bucket_reso) for item in plan.items]
    resized = [r for r in resized if r is not None]
    return DatasetSummary(
        root=plan.img_folder,
        resolution=ds.width_height,
        enable_bucket=ds.enable_bucket,
        no_upscale=ds.bucket_no_upscale,
        folders=folders,
        num_train_images=plan.num_train_images,
        num_reg_images=plan.num_reg_images,
        unused_reg_images=plan.unused_reg_images,
        bucket_counts=plan.bucket_counts,
        batch_size=plan.batch_size,
        steps_per_epoch=plan.steps_per_epoch,
        captions_read=len(captions),
        top_tags=tuple(ranked),
        upscaled=tuple(r for r in resized if not r.too_small),
        too_small=tuple(r for r in resized if r.too_small),
        plan=plan,
    )


def _resized(item, no_upscale: bool, min_bucket: int) -> ResizedImage | None:
    record, choice = item.record, item.choice
    scale = choice.resized[0] / record.width
    # lint's rule (engine/data/lint.py): without upscaling, a side below the smallest bucket trains small
    small_kept = no_upscale and min(record.width, record.height) < min_bucket
    if scale <= 1 and not small_kept:
        return None
    too_small = scale > MAX_UPSCALE or small_kept
    return ResizedImage(record.path, (record.width, record.height), choice.bucket, scale, too_small)
