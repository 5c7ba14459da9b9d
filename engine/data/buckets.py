"""Aspect-ratio buckets: which size each image is trained at, and where it is cropped.

Pure rules, no image I/O. They reproduce kohya-ss/sd-scripts (`model_util.make_bucket_resolutions`,
`train_util.BucketManager.select_bucket`, `trim_and_resize_if_required`, `get_crop_ltrb`), so a
dataset lands in the same buckets, at the same sizes and crops, as it would there:

* bucketing (default): a fixed set of resolutions of about the training area; an image goes to the
  one whose aspect ratio is nearest and is scaled to cover it, the overhang is cropped.
* `bucket_no_upscale`: no fixed set; a too-large image is shrunk to the training area keeping its
  aspect ratio, and the bucket is the (shrunk) image size rounded down to the step. Never upscales.
* no bucketing: one bucket, the training resolution; images are scaled to cover it and cropped.

Sizes are always (width, height).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from engine.errors import ConfigError, DatasetError

Size = tuple[int, int]


def make_bucket_resolutions(
    max_reso: Size, min_size: int = 256, max_size: int = 1024, divisible: int = 64
) -> list[Size]:
    """The bucket set for a training area of max_reso, sorted.

    The square of the area (rounded down to `divisible`), plus for every width from min_size to
    max_size in `divisible` steps the tallest height (at most max_size, rounded down) whose area
    fits, with its transpose; heights below min_size are dropped.
    """
    area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(area) // divisible) * divisible
    resos = {(side, side)}
    for width in range(min_size, max_size + 1, divisible):
        height = min(max_size, (area // width) // divisible * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
    return sorted(resos)


@dataclass(frozen=True, slots=True)
class BucketChoice:
    """Where one image goes: its bucket and the size it is resized to before cropping."""

    bucket: Size
    resized: Size
    #: bucket aspect ratio minus image aspect ratio (sd-scripts logs the mean of its absolute value)
    ar_error: float


@dataclass(frozen=True, slots=True)
class Placement:
    """A bucket choice plus the crop that cuts the resized image down to the bucket."""

    bucket: Size
    resized: Size
    crop_left: int
    crop_top: int
    #: BucketChoice.ar_error, for ss_bucket_info's mean_img_ar_error (derived, so not compared)
    ar_error: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class BucketChooser:
    """Chooses buckets for one dataset's settings. Build it with `for_settings`."""

    resolution: Size
    no_upscale: bool
    reso_steps: int
    #: the fixed bucket set; empty in no-upscale mode (buckets come from the image sizes)
    predefined: tuple[Size, ...] = field(default=())

    @classmethod
    def for_settings(
        cls,
        resolution: Size,
        *,
        enable_bucket: bool = True,
        no_upscale: bool = False,
        min_size: int = 256,
        max_size: int = 1024,
        reso_steps: int = 64,
    ) -> BucketChooser:
        if not enable_bucket:
            # sd-scripts uses a bucket manager with the resolution as its only bucket
            return cls(resolution, no_upscale=False, reso_steps=reso_steps, predefined=(resolution,))
        if no_upscale:
            # min/max bucket sizes are ignored here, as in sd-scripts: the image size decides
            return cls(resolution, no_upscale=True, reso_steps=reso_steps)
        if min_size > max_size:
            raise ConfigError(f"min bucket size {min_size} is larger than max bucket size {max_size}")
        if max_size < max(resolution):
            raise ConfigError(
                f"max bucket size {max_size} is smaller than a side of the resolution {resolution}: "
                f"raise it to at least {max(resolution)}"
            )
        predefined = make_bucket_resolutions(resolution, min_size, max_size, reso_steps)
        return cls(resolution, no_upscale=False, reso_steps=reso_steps, predefined=tuple(predefined))

    def choose(self, image_w: int, image_h: int) -> BucketChoice:
        if image_w <= 0 or image_h <= 0:
            raise DatasetError(f"an image has no pixels ({image_w}x{image_h})")
        aspect = image_w / image_h
        if self.no_upscale:
            bucket, resized = self._shrink_only(image_w, image_h, aspect)
        else:
            bucket, resized = self._nearest_predefined(image_w, image_h, aspect)
        return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect)

    def _nearest_predefined(self, image_w: int, image_h: int, aspect: float) -> tuple[Size, Size]:
        if (image_w, image_h) in self.predefined:
            bucket = (image_w, image_h)  # an exact size wins over an equal aspect ratio
        else:
            # the first of equally near ratios wins (numpy argmin in sd-scripts)
            bucket = min(self.predefined, key=lambda reso: abs(reso[0] / reso[1] - aspect))
        if aspect > bucket[0] / bucket[1]:
            scale = bucket[1] / image_h  # image is wider: match heights, crop the width
        else:
            scale = bucket[0] / image_w
        return bucket, (int(image_w * scale + 0.5), int(image_h * scale + 0.5))

    def _shrink_only(self, image_w: int, image_h: int, aspect: float) -> tuple[Size, Size]:
        max_area = self.resolution[0] * self.resolution[1]
        if image_w * image_h > max_area:
            # shrink to the training area; round the side whose rounding keeps the ratio best
            exact_w = math.sqrt(max_area * aspect)
            exact_h = max_area / exact_w
            w_first = self._round_to_steps(exact_w)
            h_for_w = self._round_to_steps(w_first / aspect)
            h_first = self._round_to_steps(exact_h)
            w_for_h = self._round_to_steps(h_first * aspect)
            if 0 in (w_first, h_for_w, h_first, w_for_h):
                raise DatasetError(
                    f"an image of {image_w}x{image_h} shrunk to the training area is smaller than one bucket "
                    f"step ({self.reso_steps} px) on a side: raise the resolution, lower bucket_reso_steps, "
                    "or turn bucket_no_upscale off"
                )
            if abs(w_first / h_for_w - aspect) < abs(w_for_h / h_first - aspect):
                resized = (w_first, int(w_first / aspect + 0.5))
            else:
                resized = (int(h_first * aspect + 0.5), h_first)
        else:
            resized = (image_w, image_h)
        # the bucket is never larger than the image: crop, don't pad
        bucket = (resized[0] - resized[0] % self.reso_steps, resized[1] - resized[1] % self.reso_steps)
        if bucket[0] == 0 or bucket[1] == 0:
            raise DatasetError(
                f"an image of {image_w}x{image_h} is smaller than one bucket step "
                f"({self.reso_steps} px) on a side: remove it, or turn bucket_no_upscale off"
            )
        return bucket, resized

    def _round_to_steps(self, x: float) -> int:
        rounded = int(x + 0.5)
        return rounded - rounded % self.reso_steps


def crop_offsets(choice: BucketChoice | Placement, rng: random.Random | None = None) -> tuple[int, int]:
    """(left, top) of the bucket-sized window cut from the resized image.

    Centred (overhang // 2) by default; with an rng, uniform in [0, overhang] per axis, drawing the
    width first and then the height, and only for an axis that overhangs (sd-scripts' order).
    """
    left = top = 0
    over_w = choice.resized[0] - choice.bucket[0]
    over_h = choice.resized[1] - choice.bucket[1]
    if over_w > 0:
        left = over_w // 2 if rng is None else rng.randint(0, over_w)
    if over_h > 0:
        top = over_h // 2 if rng is None else rng.randint(0, over_h)
    return left, top


def select_bucket(
    chooser: BucketChooser, image_w: int, image_h: int, rng: random.Random | None = None
) -> Placement:
    """Bucket, resized size and crop for one image; pass an rng for random_crop."""
    choice = chooser.choose(image_w, image_h)
    left, top = crop_offsets(choice, rng)
    return Placement(choice.bucket, choice.resized, left, top, choice.ar_error)


def crop_ltrb_for_sdxl(bucket: Size, original: Size) -> tuple[float, float, float, float]:
    """The crop box SDXL's size conditioning is given, computed as sd-scripts does.

    This follows Stability's preprocessing, which fits the image *inside* the bucket: the box is
    the centred fitted image, so `crop_left`/`crop_top` are the margins of that fit, not the pixels
    actually cut (sd-scripts computes it this way even for random crops). Values may be
    fractional; the caller takes `int()` of the ones it conditions on.
    """
    bucket_ar = bucket[0] / bucket[1]
    image_ar = original[0] / original[1]
    if bucket_ar > image_ar:
        fit_w, fit_h = bucket[1] * image_ar, bucket[1]
    else:
        fit_w, fit_h = bucket[0], bucket[0] / image_ar
    left = (bucket[0] - fit_w) // 2
    top = (bucket[1] - fit_h) // 2
    return left, top, left + fit_w, top + fit_h


def sdxl_crop_top_left(
    crop_ltrb: tuple[float, float, float, float], target_w: int, flipped: bool
) -> tuple[int, int]:
    """(top, left) for SDXL conditioning; a flipped image measures its left from the right edge."""
    left = target_w - crop_ltrb[2] if flipped else crop_ltrb[0]
    return int(crop_ltrb[1]), int(left)
