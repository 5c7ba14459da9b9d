"""The ss_* metadata fields that follow sd-scripts: base-model hashes, regularisation counts, tag
frequency, bucket info, and settings that are off.

The bucket info expected here was produced once by running kohya-ss/sd-scripts' own
`BucketManager` (library/train_util.py, 2026 snapshot: `make_buckets`, `select_bucket`,
`add_image` for each repeat, `sort`, then `BaseDataset.make_buckets`' bucket_info and
`np.mean(np.abs(ar_errors))`) on the same image sizes and repeats, and hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from engine.config.schema import ModelFamily, TrainConfig
from engine.data.plan import make_plan
from engine.models import hashes
from engine.run.metadata import RunFacts, training_metadata

SIZES = {"a": [(640, 384), (300, 600)], "b": [(512, 512)], "c": [(1024, 700)], "d": [(200, 900)]}
REPEATS = {"a": 2, "b": 1, "c": 3, "d": 1}
# sd-scripts' ss_bucket_info for these images at 512 px, buckets 256..1024 in steps of 64
SD_SCRIPTS_BUCKETS = {
    False: ({"0": ([256, 1024], 1), "1": ([320, 704], 2), "2": ([512, 512], 1), "3": ([576, 448], 3), "4": ([640, 384], 2)},
            0.050075036075036064),
    True: ({"0": ([192, 896], 1), "1": ([256, 576], 2), "2": ([512, 512], 1), "3": ([576, 384], 3), "4": ([640, 384], 2)},
           0.020126984126984132),
}


@pytest.fixture
def folders(tmp_path) -> Path:
    for name, sizes in SIZES.items():
        folder = tmp_path / name
        folder.mkdir()
        for i, size in enumerate(sizes):
            Image.new("RGB", size).save(folder / f"{name}{i}.png")
            (folder / f"{name}{i}.txt").write_text(f"{name}, tag{i}, Shared", encoding="utf-8")
    reg = tmp_path / "reg"
    reg.mkdir()
    for i in range(12):  # more regularisation uses than training uses: some are left out by the balancing
        Image.new("RGB", (512, 512)).save(reg / f"r{i}.png")
        (reg / f"r{i}.txt").write_text(f"person, r{i}", encoding="utf-8")
    return tmp_path


def config(root: Path, model: str = "builtin:demo", **dataset) -> TrainConfig:
    subsets = [{"image_dir": str(root / n), "num_repeats": REPEATS[n]} for n in SIZES]
    subsets.append({"image_dir": str(root / "reg"), "num_repeats": 2, "is_reg": True})
    return TrainConfig.model_validate(
        {"model": {"base_model": model},
         "dataset": {"subsets": subsets, "resolution": 512, "min_bucket_reso": 256, "max_bucket_reso": 1024, **dataset}}
    )


def metadata(cfg: TrainConfig) -> dict[str, str]:
    plan = make_plan(cfg)
    facts = RunFacts(ModelFamily.SD1, 1, 1.0e9, "torch.optim.adamw.AdamW", v_prediction=False, clip_skip=1)
    return training_metadata(cfg, cfg.network, plan, facts)


@pytest.mark.parametrize("no_upscale", [False, True])
def test_bucket_info_is_sd_scripts(folders, no_upscale):
    cfg = config(folders, bucket_no_upscale=no_upscale)
    cfg.dataset.subsets = cfg.dataset.subsets[:-1]  # the training folders, in the order sd-scripts read them
    info = json.loads(metadata(cfg)["ss_bucket_info"])
    buckets, mean_error = SD_SCRIPTS_BUCKETS[no_upscale]
    assert info == {"buckets": {k: {"resolution": r, "count": c} for k, (r, c) in buckets.items()}, "mean_img_ar_error": mean_error}


def test_no_bucket_info_without_buckets(folders):
    cfg = config(folders, enable_bucket=False)
    assert metadata(cfg)["ss_bucket_info"] == "null"


def test_regularisation_counts_and_tags(folders):
    meta = metadata(config(folders))
    # images x repeats before the balancing (12 x 2), not the 11 uses the balancing keeps
    assert meta["ss_num_reg_images"] == "24"
    assert meta["ss_num_train_images"] == str(2 * 2 + 1 + 3 + 1)
    freq = json.loads(meta["ss_tag_frequency"])
    assert freq["reg"]["person"] == 12  # every image of the folder, the unused ones too
    assert freq["a"] == {"a": 2, "tag0": 1, "tag1": 1, "shared": 2}
    # off settings read as sd-scripts writes them
    assert (meta["ss_caption_dropout_rate"], meta["ss_caption_dropout_every_n_epochs"], meta["ss_caption_tag_dropout_rate"]) == (
        "0.0", "0", "0.0")


def test_base_model_hashes_are_the_files_and_cached(folders, tmp_path, monkeypatch):
    model = tmp_path / "model.safetensors"
    data = os.urandom((1 << 20) + (1 << 17))
    model.write_bytes(data)
    meta = metadata(config(folders, model=str(model)))
    # recomputed here from the bytes: A1111's old hash (64 KiB at 1 MiB) and the whole file's
    assert meta["ss_sd_model_hash"] == hashlib.sha256(data[1 << 20 : (1 << 20) + (1 << 16)]).hexdigest()[:8]
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["ss_sd_model_name"] == "model.safetensors"
    cached = json.loads(hashes.cache_file().read_text(encoding="utf-8"))[str(model.resolve())]
    assert cached["sha256"] == hashlib.sha256(data).hexdigest() and cached["size"] == len(data)

    def no_hashing(path):
        raise AssertionError("hashed again")

    monkeypatch.setattr(hashes, "full_hash", no_hashing)
    assert hashes.model_hashes(model).sha256 == hashlib.sha256(data).hexdigest()  # from the cache
    monkeypatch.undo()
    model.write_bytes(data[:-1])  # a changed file is hashed again
    assert hashes.model_hashes(model).sha256 == hashlib.sha256(data[:-1]).hexdigest()


def test_no_hashes_for_the_builtin_model_or_a_folder(folders, tmp_path):
    assert "ss_sd_model_hash" not in metadata(config(folders))
    assert hashes.model_hashes(tmp_path) is None
