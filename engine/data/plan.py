"""The plan of a run, computed before anything expensive: dataset, buckets, exact step count, outputs.

Pure Python (no torch): the queue's preflight and `--dry-run` use it to show every run's numbers
before the first one starts, and the trainer follows the same plan, so the step count printed is
the step count trained.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.data.buckets import BucketChooser, Placement, select_bucket
from engine.data.captions import read_caption
from engine.data.dataset import (
    ImageRecord,
    Subset,
    balance_regularisation,
    batches_per_epoch,
    load_subsets,
    train_image_count,
)
from engine.data.subsets import folder_specs, resolve_img_folder
from engine.rng import batch_order

__all__ = ["RunPlan", "Sample", "TrainItem", "bucket_chooser", "epoch_batches", "make_plan", "resolve_img_folder", "steps_before"]


@dataclass(frozen=True, slots=True)
class TrainItem:
    record: ImageRecord
    uses: int  # times per epoch (repeats, or the balanced count for a reg image)
    choice: Placement  # bucket, resized size and (centre) crop of this image

    @property
    def bucket(self) -> tuple[int, int]:
        return self.choice.bucket


@dataclass(frozen=True)
class RunPlan:
    img_folder: Path | None  # the parent of the <repeats>_<name> folders (None: dataset.subsets lists them)
    subsets: tuple[Subset, ...]
    reg_subsets: tuple[Subset, ...]
    items: tuple[TrainItem, ...]
    num_train_images: int  # images x repeats (sd-scripts' num_train_images)
    num_reg_images: int  # reg uses per epoch after balancing
    unused_reg_images: int
    bucket_counts: dict[tuple[int, int], int]
    batch_size: int
    num_processes: int
    grad_accum: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    captions: dict[Path, str]  # each image's caption text (its file's first line, else its class)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.num_processes


def bucket_chooser(cfg: TrainConfig) -> BucketChooser:
    ds = cfg.dataset
    return BucketChooser.for_settings(
        ds.width_height,
        enable_bucket=ds.enable_bucket,
        no_upscale=ds.bucket_no_upscale,
        min_size=ds.min_bucket_reso,
        max_size=ds.max_bucket_reso,
        reso_steps=ds.bucket_reso_steps,
    )


def make_plan(cfg: TrainConfig, num_processes: int = 1) -> RunPlan:
    ds, tr = cfg.dataset, cfg.training
    folder = None if ds.subsets or ds.img_folder is None else resolve_img_folder(ds.img_folder)
    loaded = load_subsets(folder_specs(cfg))
    subsets = [s for s in loaded if not s.is_reg]
    reg_subsets = [s for s in loaded if s.is_reg]
    num_train = train_image_count(subsets)
    reg_uses = balance_regularisation(num_train, reg_subsets)
    all_reg = sum(len(s.images) for s in reg_subsets)

    chooser = bucket_chooser(cfg)
    items = [TrainItem(img, s.repeats, select_bucket(chooser, img.width, img.height)) for s in subsets for img in s.images]
    items += [TrainItem(img, uses, select_bucket(chooser, img.width, img.height)) for img, uses in reg_uses]
    counts: Counter[tuple[int, int]] = Counter()
    for item in items:
        counts[item.bucket] += item.uses

    per_epoch = batches_per_epoch(dict(counts), tr.batch_size)
    # One optimizer step trains one global batch: batch_size samples on each process, all from one
    # bucket. With one process this is sd-scripts' count exactly; with several it can be a step
    # more per bucket than sd-scripts' ceil(batches / processes), whose processes may each take a
    # batch from a different bucket.
    global_batches = batches_per_epoch(dict(counts), tr.batch_size * num_processes)
    steps_per_epoch = math.ceil(global_batches / cfg.optim.gradient_accumulation_steps)
    # A config holds one limit as its source tool meant it (the import keeps sd-scripts' and LETS'
    # rules, engine/config/sources.py): a step count, when set, wins over the epoch count.
    if tr.max_steps:
        total = tr.max_steps
        epochs = math.ceil(total / steps_per_epoch)
    else:
        epochs = tr.epoch_count
        total = epochs * steps_per_epoch
    opt = cfg.optim
    warmup = opt.lr_warmup_steps if opt.lr_warmup_steps is not None else warmup_steps_from_ratio(opt.lr_warmup_ratio, total)
    return RunPlan(
        img_folder=folder,
        subsets=tuple(subsets),
        reg_subsets=tuple(reg_subsets),
        items=tuple(items),
        num_train_images=num_train,
        num_reg_images=sum(n for _, n in reg_uses),
        unused_reg_images=all_reg - len(reg_uses),
        bucket_counts=dict(sorted(counts.items())),
        batch_size=tr.batch_size,
        num_processes=num_processes,
        grad_accum=cfg.optim.gradient_accumulation_steps,
        batches_per_epoch=per_epoch,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total,
        warmup_steps=warmup,
        captions=read_captions(items),
    )


def read_captions(items: list[TrainItem]) -> dict[Path, str]:
    """Each image's caption text: its caption file (every line of it in a folder with wildcards,
    whose lines are the choices), else its folder's class name."""
    return {
        item.record.path: read_caption(item.record.caption_path, all_lines=item.record.rules.wildcard) if item.record.caption_path else item.record.class_caption
        for item in items
    }


def warmup_steps_from_ratio(ratio: float, total_steps: int) -> int:
    """Warmup steps for a share of the total, rounded down as sd-scripts does (`int(ratio * total)`)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the warmup ratio must be in [0, 1) (got {ratio})")
    return int(ratio * total_steps)


def steps_before(plan: RunPlan, epoch: int, index: int) -> int:
    """Optimizer steps finished before global batch `index` (0-based) of `epoch` (1-based): every
    epoch has the plan's steps, and `grad_accum` batches make one step (the last, short group of an
    epoch too). sd-scripts' caption token warm-up counts these steps."""
    return (epoch - 1) * plan.steps_per_epoch + index // plan.grad_accum


@dataclass(frozen=True, slots=True)
class Sample:
    item: TrainItem
    flip: bool


def epoch_batches(plan: RunPlan, seed: int, epoch: int, flip_aug: bool) -> list[list[Sample]]:
    """The global batches of one epoch (1-based), in training order; same seed, same batches.

    Each image appears `uses` times; batches never mix buckets; the order of samples inside a
    bucket and the order of batches are shuffled with a generator derived from (seed, epoch), so a
    resumed run rebuilds exactly the batches it would have seen.
    """
    rng = batch_order(seed, epoch)
    size = plan.batch_size * plan.num_processes  # one global batch per step, split over processes
    by_bucket: dict[tuple[int, int], list[Sample]] = {}
    for item in plan.items:
        for _ in range(item.uses):
            flip = flip_aug and rng.random() < 0.5
            by_bucket.setdefault(item.bucket, []).append(Sample(item, flip))
    batches: list[list[Sample]] = []
    for bucket in sorted(by_bucket):
        samples = by_bucket[bucket]
        rng.shuffle(samples)
        batches += [samples[i : i + size] for i in range(0, len(samples), size)]
    rng.shuffle(batches)
    return batches
