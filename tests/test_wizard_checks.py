"""The wizard's checks at the question, with the rulebook's rules, and the defaults that follow
earlier answers (driven as tests/test_wizard_flow.py drives the wizard)."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.config.io import save_config
from engine.config.schema import TrainConfig
from tests.support.cli import write_dataset
from tests.support.wizard_expect import (
    write_safetensors,
)
from tests.support.wizard_script import (
    DOWN,
    ENTER,
    Script,
    run_wizard,
    typed,
)

pytestmark = pytest.mark.usefixtures("no_hang")


# ---- checks at the question and defaults that follow earlier answers (the rulebook's, issue 13) ----

PRODIGY, LION = DOWN * 6 + ENTER, DOWN + ENTER  # from AdamW8bit, the default


def test_images_directly_in_the_folder_are_refused_at_the_question(saved, monkeypatch, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (64, 64)).save(flat / "a.png")
    good = write_dataset(tmp_path / "good")
    run = run_wizard(Script({"dataset.img_folder": typed(str(flat)) + typed(str(good))}), saved, monkeypatch)

    assert run.asked.count("dataset.img_folder") == 1  # refused as it was typed, not after the review
    assert run.outcome.configs[0].dataset.img_folder == str(good)


def test_a_concept_folder_given_for_its_parent_is_offered_the_parent(saved, monkeypatch, tmp_path):
    data = write_dataset(tmp_path / "data", folder="10_mychar")
    run = run_wizard(Script({"dataset.img_folder": typed(str(data / "10_mychar")) + "y"}), saved, monkeypatch)

    assert run.outcome.configs[0].dataset.img_folder == str(data)
    assert "10_mychar is one <repeats>_<name> folder itself" in " ".join(run.output.split())
    assert "10_10_mychar" not in run.output


def test_declining_the_parent_asks_the_folder_again(saved, monkeypatch, tmp_path):
    data = write_dataset(tmp_path / "data", folder="10_mychar")
    other = write_dataset(tmp_path / "other")
    script = Script({"dataset.img_folder": typed(str(data / "10_mychar")) + "n" + typed(str(other))})
    assert run_wizard(script, saved, monkeypatch).outcome.configs[0].dataset.img_folder == str(other)


def test_the_reg_folder_is_checked_the_same_way(saved, monkeypatch, tmp_path):
    reg = write_dataset(tmp_path / "reg", folder="1_person")
    script = Script({"ask.reg_images": "y", "dataset.reg_img_folder": typed(str(reg / "1_person")) + "y"})
    assert run_wizard(script, saved, monkeypatch).outcome.configs[0].dataset.reg_img_folder == reg


def test_a_learning_rate_far_outside_the_optimizers_range_is_confirmed(saved, monkeypatch):
    script = Script({"optim.learning_rate": typed("0.5") + "n" + typed("2e-4")})
    run = run_wizard(script, saved, monkeypatch)
    assert "is far outside the usual range for AdamW8bit" in " ".join(run.output.split())
    assert run.outcome.configs[0].optim.learning_rate == 2e-4


def test_a_confirmed_learning_rate_is_kept(saved, monkeypatch):
    kept = run_wizard(Script({"optim.learning_rate": typed("0.05") + "y"}), saved, monkeypatch)
    assert kept.outcome.configs[0].optim.learning_rate == 0.05  # the user's call, once confirmed


def test_prodigy_gets_a_learning_rate_of_one(saved, monkeypatch):
    run = run_wizard(Script({"optim.optimizer": PRODIGY}), saved, monkeypatch)
    cfg = run.outcome.configs[0]
    assert cfg.optim.optimizer == "Prodigy" and cfg.optim.learning_rate == 1.0
    assert "(for Prodigy)" in run.output  # the review says why it changed


def test_lion_gets_a_third_of_adamws_learning_rate(saved, monkeypatch):
    cfg = run_wizard(Script({"optim.optimizer": LION}), saved, monkeypatch).outcome.configs[0]
    assert cfg.optim.optimizer == "Lion" and cfg.optim.learning_rate == pytest.approx(1e-4 / 3, rel=1e-2)


def test_a_learning_rate_the_user_typed_does_not_follow(saved, monkeypatch):
    script = Script({"optim.optimizer": [ENTER, PRODIGY], "optim.learning_rate": typed("3e-4")}, actions=["edit", "train"], edits=["optim.optimizer"])
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]
    assert cfg.optim.optimizer == "Prodigy" and cfg.optim.learning_rate == 3e-4


def test_changing_the_optimizer_at_the_review_brings_its_learning_rate(saved, monkeypatch):
    script = Script({"optim.optimizer": [ENTER, PRODIGY]}, actions=["edit", "train"], edits=["optim.optimizer"])
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]
    assert cfg.optim.optimizer == "Prodigy" and cfg.optim.learning_rate == 1.0


def test_an_sdxl_model_gets_1024_pixels_and_buckets_to_match(saved, monkeypatch, tmp_path):
    model = write_safetensors(tmp_path / "xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight"])
    run = run_wizard(Script({"model.base_model": typed(str(model))}), saved, monkeypatch)
    ds = run.outcome.configs[0].dataset
    assert ds.resolution == 1024 and (ds.min_bucket_reso, ds.max_bucket_reso) == (640, 1920)
    assert "(for an SDXL model)" in run.output and "(for 1024 px)" in run.output


def test_a_loaded_configs_own_values_do_not_follow(saved, monkeypatch, tmp_path):
    original = TrainConfig.model_validate({"optim": {"optimizer": "Prodigy", "learning_rate": 0.7, "mixed_precision": "bf16"}})
    path = save_config(original, tmp_path)
    script = Script({"ask.load_json": "y", "ask.load_path": typed(str(path))})
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]
    assert cfg.optim.learning_rate == 0.7  # the file's, not the optimizer's suggestion
