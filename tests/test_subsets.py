"""dataset.subsets: the folders listed one by one, with their repeats, class tokens, regularisation
flag and caption options; the `<repeats>_<name>` scan fills the same list, so both give one plan."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from engine.config.rules import check
from engine.config.schema import TrainConfig
from engine.data.captions import CaptionRules, apply_rules
from engine.data.lint import lint_dataset
from engine.data.plan import make_plan, steps_before
from engine.data.subsets import folder_specs
from engine.errors import DatasetError
from engine.prep.view import summarize
from engine.problems import Level
from engine.text.cache import cache_blocker

SMALL = {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128}


@pytest.fixture
def layout(tmp_path) -> Path:
    """img/3_cat (2 captioned images, one without caption), reg/1_animal (4 images)."""
    cat = tmp_path / "img" / "3_cat"
    cat.mkdir(parents=True)
    for i, size in enumerate([(64, 64), (96, 64), (64, 96)]):
        Image.new("RGB", size).save(cat / f"c{i}.png")
        if i < 2:
            (cat / f"c{i}.txt").write_text(f"cat, pose {i}", encoding="utf-8")
    animal = tmp_path / "reg" / "1_animal"
    animal.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64)).save(animal / f"a{i}.png")
    return tmp_path


def cfg_of(**dataset) -> TrainConfig:
    return TrainConfig.model_validate({"dataset": {**SMALL, **dataset}})


def listed(root: Path, **first) -> list[dict]:
    return [
        {"image_dir": str(root / "img" / "3_cat"), "num_repeats": 3, "class_tokens": "cat", **first},
        {"image_dir": str(root / "reg" / "1_animal"), "num_repeats": 1, "class_tokens": "animal", "is_reg": True},
    ]


def test_the_folder_scan_and_the_list_give_one_plan(layout):
    scanned = make_plan(cfg_of(img_folder=str(layout / "img"), reg_img_folder=str(layout / "reg")))
    from_list = make_plan(cfg_of(subsets=listed(layout)))
    for name in ("num_train_images", "num_reg_images", "unused_reg_images", "bucket_counts", "steps_per_epoch", "total_steps"):
        assert getattr(scanned, name) == getattr(from_list, name), name
    assert [(i.record.path, i.uses) for i in scanned.items] == [(i.record.path, i.uses) for i in from_list.items]
    assert from_list.img_folder is None and scanned.img_folder == layout / "img"


def test_each_folder_has_its_own_caption_options(layout):
    cfg = cfg_of(subsets=listed(layout, caption_prefix="photo of", shuffle_caption=True), keep_tokens=1)
    specs = folder_specs(cfg)
    assert specs[0].rules == CaptionRules(shuffle=True, keep_tokens=1, prefix="photo of")
    assert specs[1].rules == CaptionRules(keep_tokens=1)  # the dataset's options
    plan = make_plan(cfg)
    cat = [i.record for i in plan.items if i.record.subset == "3_cat"]
    assert {r.rules.prefix for r in cat} == {"photo of"}
    uncaptioned = next(r for r in cat if r.caption_path is None)
    assert uncaptioned.class_caption == "cat"
    assert apply_rules("cat, pose 1", cat[0].rules, epoch=1, rng=random.Random(0)).startswith("photo of cat")


def test_a_folder_without_class_tokens_captions_missing_files_empty(layout):
    cfg = cfg_of(subsets=[{"image_dir": str(layout / "img" / "3_cat")}])
    record = next(i.record for i in make_plan(cfg).items if i.record.caption_path is None)
    assert record.class_caption == "" and record.repeats == 1


def test_folder_problems_name_the_field(layout):
    with pytest.raises(DatasetError, match=r"dataset.subsets\[0\]: .*nowhere is not a folder"):
        make_plan(cfg_of(subsets=[{"image_dir": str(layout / "nowhere")}]))
    with pytest.raises(DatasetError, match="holds <repeats>_<name> folders: name it in dataset.img_folder"):
        make_plan(cfg_of(subsets=[{"image_dir": str(layout / "img")}]))


def test_lint_and_the_view_read_the_list(layout):
    cfg = cfg_of(subsets=[*listed(layout), {"image_dir": str(layout / "gone")}])
    problems = lint_dataset(cfg)
    assert any("dataset.subsets[2].image_dir is not a folder" in str(p) for p in problems)
    assert any("captioned 'cat' (the folder's class tokens)" in str(p) and p.level == Level.WARNING for p in problems)
    summary = summarize(cfg_of(subsets=listed(layout)))
    assert summary.root is None and [f.name for f in summary.folders] == ["3_cat", "1_animal"]
    assert summary.num_reg_images == 9 and summary.missing_captions == 1


def test_rules_for_where_the_images_come_from(layout):
    def errors(**dataset):
        return [str(p) for p in check(cfg_of(**dataset)) if p.level == Level.ERROR]

    both = errors(img_folder=str(layout / "img"), subsets=listed(layout))
    assert any("dataset.img_folder" in e and "and dataset.subsets both name the images" in e for e in both)
    assert any("reg_img_folder" in e for e in errors(subsets=listed(layout), reg_img_folder=str(layout / "reg")))
    assert any("regularisation folders only" in e for e in errors(subsets=listed(layout)[1:]))
    assert any("neither dataset.img_folder nor dataset.subsets" in e for e in errors(img_folder=None))
    assert errors(subsets=listed(layout)) == []


def test_warmup_in_steps_and_the_steps_before_a_batch(layout):
    base = {"dataset": {**SMALL, "img_folder": str(layout / "img")}, "training": {"epochs": 3}}
    cfg = TrainConfig.model_validate({**base, "optim": {"lr_warmup_steps": 4, "lr_scheduler": "cosine", "gradient_accumulation_steps": 2}})
    plan = make_plan(cfg)
    assert plan.warmup_steps == 4  # sd-scripts' whole number of steps, as given
    # 9 uses, batch 1: 9 batches, 2 to a step; the last, short group of an epoch is a step too
    assert plan.steps_per_epoch == 5 and plan.total_steps == 15
    assert [steps_before(plan, 1, i) for i in range(4)] == [0, 0, 1, 1]
    assert steps_before(plan, 2, 0) == 5 and steps_before(plan, 3, 8) == 14
    ratio = TrainConfig.model_validate({**base, "optim": {"lr_warmup_ratio": 0.5, "lr_scheduler": "cosine"}})
    assert make_plan(ratio).warmup_steps == int(0.5 * make_plan(ratio).total_steps)
    both = TrainConfig.model_validate({**base, "optim": {"lr_warmup_ratio": 0.5, "lr_warmup_steps": 3}})
    assert any("both set the warm-up" in str(p) for p in check(both))


def test_the_text_encoder_cache_sees_each_folders_rules(layout):
    unet_only = {"network": {"train_on": "unet_only"}}
    plain = TrainConfig.model_validate({**unet_only, "dataset": {**SMALL, "subsets": listed(layout, caption_prefix="x")}})
    assert cache_blocker(plain) is None  # a prefix is the same text at every use
    wild = TrainConfig.model_validate({**unet_only, "dataset": {**SMALL, "subsets": listed(layout, enable_wildcard=True)}})
    assert "enable_wildcard" in cache_blocker(wild)
    warm = TrainConfig.model_validate({**unet_only, "dataset": {**SMALL, "subsets": listed(layout, token_warmup_step=10)}})
    assert "token_warmup_step" in cache_blocker(warm)
