"""Bucket rules against values produced by kohya-ss/sd-scripts.

Expected values were produced once by running sd-scripts' own `model_util.make_bucket_resolutions`,
`train_util.BucketManager.select_bucket`, `BucketManager.get_crop_ltrb` and the crop offsets of
`trim_and_resize_if_required` (kohya-ss/sd-scripts, 2026 snapshot), and
hard-coded here. A one-off script also compared all three modes on 3,000 random image sizes and four
settings: every bucket, resized size, aspect error and crop matched.
"""

import random

import pytest

from engine.data.buckets import (
    BucketChoice,
    BucketChooser,
    Placement,
    crop_ltrb_for_sdxl,
    crop_offsets,
    make_bucket_resolutions,
    sdxl_crop_top_left,
    select_bucket,
)
from engine.errors import ConfigError, DatasetError

# sd-scripts: make_bucket_resolutions((512, 512), 256, 1024, 64)
SD_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640),
    (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256),
    (896, 256), (960, 256), (1024, 256),
]
# sd-scripts: make_bucket_resolutions((1024, 1024), 512, 2048, 64)
SD_1024 = [
    (512, 1856), (512, 1920), (512, 1984), (512, 2048), (576, 1664), (576, 1728), (576, 1792),
    (640, 1536), (640, 1600), (704, 1408), (704, 1472), (768, 1280), (768, 1344), (832, 1216),
    (896, 1152), (960, 1088), (1024, 1024), (1088, 960), (1152, 896), (1216, 832), (1280, 768),
    (1344, 768), (1408, 704), (1472, 704), (1536, 640), (1600, 640), (1664, 576), (1728, 576),
    (1792, 576), (1856, 512), (1920, 512), (1984, 512), (2048, 512),
]


def test_bucket_set_matches_sd_scripts():
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == SD_512
    assert make_bucket_resolutions((1024, 1024), 512, 2048, 64) == SD_1024


def test_every_bucket_fits_the_area_and_the_bounds():
    for w, h in make_bucket_resolutions((768, 512), 320, 960, 64):
        assert w * h <= 768 * 512
        assert 320 <= w <= 960 and 320 <= h <= 960
        assert w % 64 == 0 and h % 64 == 0


# (image size) -> (bucket, resized, ar_error, centre crop, random crop with Random(0), sdxl ltrb)
UPSCALE_CASES = [
    ((1920, 1080), (640, 384), (683, 384), -0.11111111111111094, (21, 0), (24, 0), (0, 12.0, 640, 372.0)),
    ((1080, 1920), (384, 640), (384, 683), 0.03749999999999998, (0, 21), (0, 24), (12.0, 0, 372.0, 640)),
    ((512, 512), (512, 512), (512, 512), 0.0, (0, 0), (0, 0), (0, 0.0, 512, 512.0)),
    ((768, 512), (640, 384), (640, 427), 0.16666666666666674, (0, 21), (0, 24), (32.0, 0, 608.0, 384)),
    ((1000, 333), (832, 256), (832, 277), 0.24699699699699718, (0, 10), (0, 12), (31.0, 0, 799.7687687687687, 256)),
    ((64, 4000), (256, 1024), (256, 16000), 0.23399999999999999, (0, 7488), (0, 13835), (119.0, 0, 135.38400000000001, 1024)),
]


@pytest.mark.parametrize("size,bucket,resized,ar_error,centre,rand0,ltrb", UPSCALE_CASES)
def test_bucketing_with_upscale_matches_sd_scripts(size, bucket, resized, ar_error, centre, rand0, ltrb):
    chooser = BucketChooser.for_settings((512, 512), min_size=256, max_size=1024, reso_steps=64)
    choice = chooser.choose(*size)
    assert choice == BucketChoice(bucket, resized, ar_error)
    assert crop_offsets(choice) == centre
    assert crop_offsets(choice, random.Random(0)) == rand0
    assert crop_ltrb_for_sdxl(bucket, size) == ltrb


def test_upscale_scales_small_images_up_to_cover_the_bucket():
    chooser = BucketChooser.for_settings((512, 512), min_size=256, max_size=1024, reso_steps=64)
    choice = chooser.choose(100, 100)
    assert choice.bucket == (512, 512) and choice.resized == (512, 512)


def test_an_image_already_at_a_bucket_size_is_not_resized():
    chooser = BucketChooser.for_settings((512, 512), min_size=256, max_size=1024, reso_steps=64)
    assert select_bucket(chooser, 640, 384) == Placement((640, 384), (640, 384), 0, 0)


NO_UPSCALE_CASES = [
    # (image) -> (bucket, resized, centre crop); from BucketManager(no_upscale=True, (512, 512), 256, 1024, 64)
    ((1920, 1080), (640, 384), (683, 384), (21, 0)),
    ((1080, 1920), (384, 640), (384, 683), (0, 21)),
    ((500, 300), (448, 256), (500, 300), (26, 22)),  # small: kept, bucket rounded down
    ((3000, 1000), (768, 256), (768, 256), (0, 0)),
    ((640, 640), (512, 512), (512, 512), (0, 0)),
]


@pytest.mark.parametrize("size,bucket,resized,centre", NO_UPSCALE_CASES)
def test_bucket_no_upscale_matches_sd_scripts(size, bucket, resized, centre):
    chooser = BucketChooser.for_settings((512, 512), no_upscale=True, reso_steps=64)
    placement = select_bucket(chooser, *size)
    assert placement == Placement(bucket, resized, *centre)
    assert placement.bucket[0] <= placement.resized[0] and placement.bucket[1] <= placement.resized[1]


def test_no_upscale_refuses_an_image_smaller_than_one_step():
    chooser = BucketChooser.for_settings((512, 512), no_upscale=True, reso_steps=64)
    with pytest.raises(DatasetError, match="40x300"):
        chooser.choose(40, 300)


def test_no_bucketing_uses_the_resolution_as_the_only_bucket():
    # sd-scripts: BucketManager(False, (512, 512), None, None, None) with [(512, 512)] predefined
    chooser = BucketChooser.for_settings((512, 512), enable_bucket=False)
    assert select_bucket(chooser, 1920, 1080) == Placement((512, 512), (910, 512), 199, 0)
    assert select_bucket(chooser, 300, 600) == Placement((512, 512), (512, 1024), 0, 256)


def test_random_crop_uses_the_given_rng_width_first():
    chooser = BucketChooser.for_settings((512, 512), enable_bucket=False)
    choice = chooser.choose(1920, 1080)  # overhangs 398 px in width only
    expected = random.Random(7).randint(0, 398)
    assert crop_offsets(choice, random.Random(7)) == (expected, 0)
    lefts = {crop_offsets(choice, random.Random(seed))[0] for seed in range(50)}
    assert len(lefts) > 10 and min(lefts) >= 0 and max(lefts) <= 398


def test_sdxl_crop_top_left_handles_flips():
    ltrb = crop_ltrb_for_sdxl((640, 384), (768, 512))  # (32.0, 0, 608.0, 384)
    assert sdxl_crop_top_left(ltrb, 640, flipped=False) == (0, 32)
    assert sdxl_crop_top_left(ltrb, 640, flipped=True) == (0, 32)  # 640 - 608
    ltrb = crop_ltrb_for_sdxl((832, 256), (1000, 333))
    assert sdxl_crop_top_left(ltrb, 832, flipped=True) == (0, 32)  # int(832 - 799.77)


def test_impossible_settings_fail_loudly():
    with pytest.raises(ConfigError, match="min bucket size"):
        BucketChooser.for_settings((512, 512), min_size=1024, max_size=960)
    with pytest.raises(ConfigError, match="at least 768"):
        BucketChooser.for_settings((768, 512), min_size=256, max_size=640)
    with pytest.raises(DatasetError, match="no pixels"):
        BucketChooser.for_settings((512, 512)).choose(0, 10)
