"""The dataset view (`lora-wizard dataset DIR`, and the wizard after the image folder question).

Its numbers must be the training plan's: they are checked against `make_plan` and against the tag
counts training writes (engine.run.setup.tag_frequency), and against numbers worked out by hand.
"""

import io
import json
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from engine.config.schema import TrainConfig
from engine.data.plan import make_plan
from engine.prep.view import summarize
from prompts import load_prompts
from tests.support.cli import one_line
from tests.support.prep_models import write_images, write_tagger
from wizard.app import main
from wizard.dataset_cmd import view_config
from wizard.dataset_step import show_dataset
from wizard.dataset_view import render_summary
from wizard.questions import Draft, question_list
from wizard.screen import Screen

GREY = (128, 128, 128)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "dataset"
    write_images(root / "10_mychar", {"a.png": ((512, 512), GREY), "b.png": ((512, 512), GREY)},
                 {"a.png": "mychar, 1girl, smile\n"})
    write_images(root / "2_outfits", {"dress.png": ((300, 400), GREY), "tiny.png": ((100, 120), GREY)},
                 {"dress.png": "mychar, dress\n"})
    return root


@pytest.fixture
def reg(tmp_path) -> Path:
    return write_images(tmp_path / "reg" / "1_person", {f"p{i}.png": ((512, 512), GREY) for i in range(3)}).parent


def config(folder: Path, **dataset) -> TrainConfig:
    return TrainConfig.model_validate({"dataset": {"img_folder": str(folder), **dataset}})


def test_numbers_worked_out_by_hand(dataset):
    s = summarize(config(dataset))

    assert [(f.name, f.repeats, f.images, f.uses, len(f.missing_captions)) for f in s.folders] == [
        ("10_mychar", 10, 2, 20, 1),
        ("2_outfits", 2, 2, 4, 1),
    ]
    assert s.num_train_images == 24 and s.missing_captions == 2 and s.steps_per_epoch == 24
    assert s.bucket_counts == {(448, 576): 4, (512, 512): 20}
    # captions: "mychar, 1girl, smile", "mychar" (b.png: its folder's name), "mychar, dress", "outfits"
    assert s.top_tags == (("mychar", 3), ("1girl", 1), ("dress", 1), ("outfits", 1), ("smile", 1))
    assert [(r.path.name, r.bucket, round(r.scale, 2)) for r in s.upscaled] == [("dress.png", (448, 576), 1.49)]
    assert [(r.path.name, round(r.scale, 2)) for r in s.too_small] == [("tiny.png", 4.8)]


def test_the_view_agrees_with_the_training_plan(dataset, reg):
    from engine.run.metadata import tag_frequency

    for settings in ({}, {"resolution": 768}, {"resolution": [640, 384], "bucket_no_upscale": True},
                     {"enable_bucket": False}, {"reg_img_folder": str(reg)}):
        cfg = config(dataset, **settings)
        s, plan = summarize(cfg, top=100), make_plan(cfg)
        assert s.bucket_counts == plan.bucket_counts
        assert (s.num_train_images, s.num_reg_images, s.unused_reg_images, s.steps_per_epoch) == (
            plan.num_train_images, plan.num_reg_images, plan.unused_reg_images, plan.steps_per_epoch)
        assert sum(f.uses for f in s.folders) == sum(plan.bucket_counts.values())
        trained: dict[str, int] = {}
        training = {subset.folder.name for subset in plan.subsets}  # ss_tag_frequency also has the reg folders
        for folder, counts in tag_frequency(plan).items():  # ss_tag_frequency, as saved
            for tag, n in counts.items() if folder in training else ():
                trained[tag] = trained.get(tag, 0) + n
        assert dict(s.top_tags) == trained


def test_regularisation_folders_show_their_balanced_uses(dataset, reg):
    s = summarize(config(dataset, reg_img_folder=str(reg)))
    [person] = [f for f in s.folders if f.is_reg]
    assert (person.images, person.uses) == (3, 24)  # balanced up to the 24 training uses
    assert s.steps_per_epoch == 48


def test_no_upscale_lists_images_below_the_smallest_bucket(dataset):
    s = summarize(config(dataset, bucket_no_upscale=True))
    assert s.upscaled == ()
    assert [(r.path.name, r.bucket) for r in s.too_small] == [("dress.png", (256, 384)), ("tiny.png", (64, 64))]


def test_the_output_fits_80_columns_and_keeps_paths_whole(tmp_path):
    long_name = "10_" + "a_really_long_concept_folder_name_" * 3
    root = tmp_path / ("deep" * 12) / "dataset"
    write_images(root / long_name, {f"image_with_a_long_file_name_{i}.png": ((200, 260), GREY) for i in range(14)},
                 {"image_with_a_long_file_name_0.png": ", ".join(f"tag number {i}" for i in range(40))})
    lines = render_summary(summarize(config(root)), 80)

    long_lines = [line for line in lines if len(line) > 80]
    assert all(len(line.split()) == 1 for line in long_lines), long_lines  # only an unbreakable path
    assert f"    {long_name}" in lines  # the folder name, whole, below its row of numbers
    assert any(line.strip() == str(root) for line in lines)
    assert "image_with_a_long_file_name_6.png and 3 more" in " ".join(" ".join(lines).split())  # 10 of 13 listed


def test_cli_view(dataset, capsys):
    assert main(["dataset", str(dataset), "--resolution", "768"]) == 0
    out = capsys.readouterr().out
    assert f"Dataset {dataset}" in out.replace("\n", " ") and "resolution 768x768" in out
    assert "Buckets at 768x768" in out and "Captions missing: 2 images" in out
    assert "2_outfits: tiny.png" in out and "2_outfits/tiny.png 100x120" in out

    assert main(["dataset", "view", str(dataset)]) == 0  # the explicit form
    assert "Buckets at 512x512" in capsys.readouterr().out


def test_cli_view_with_a_config(dataset, tmp_path, capsys):
    from engine.config.io import save_config

    path = save_config(config(dataset, resolution=[640, 384], bucket_no_upscale=True), tmp_path, name="cfg")
    assert main(["dataset", "--config", str(path)]) == 0  # the config's folder
    out = capsys.readouterr().out
    assert "resolution 640x384, buckets, no upscaling" in out
    cfg = view_config(None, path, "512", None)
    assert cfg.dataset.resolution == 512 and cfg.dataset.bucket_no_upscale  # the option wins


def test_cli_view_bad_input(dataset, tmp_path, capsys):
    assert main(["dataset", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in one_line(capsys.readouterr().out)  # wrapped where the path ends
    assert main(["dataset", str(dataset / "10_mychar")]) == 2
    assert f"lora-wizard dataset {dataset}" in one_line(capsys.readouterr().out)
    assert main(["dataset"]) == 2
    assert "--config" in capsys.readouterr().out
    assert main(["dataset", str(dataset), "--resolution", "10"]) == 2
    assert "at least 64" in one_line(capsys.readouterr().out)


# ---- in the wizard --------------------------------------------------------------------------------------


def draft_for(folder: Path) -> Draft:
    draft = Draft(TrainConfig(), question_list(loaded=False))
    draft.answers["dataset.img_folder"] = str(folder)
    return draft


def test_wizard_shows_the_summary_and_offers_to_tag(dataset, tmp_path, monkeypatch):
    tagger = write_tagger(tmp_path / "tagger")
    monkeypatch.setenv("LORA_WIZARD_TAGGER", str(tagger))
    out = io.StringIO()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text("y" + "mychar\r")  # tag them? yes; trigger word
        show_dataset(draft_for(dataset), Screen(Console(file=out, width=80), load_prompts("en")))
    text = out.getvalue()

    assert "Captions missing: 2 images" in text and "Buckets at 512x512" in text
    assert (dataset / "10_mychar" / "b.txt").read_text().startswith("mychar, 1girl, long hair")
    assert (dataset / "2_outfits" / "tiny.txt").is_file()
    assert (dataset / "10_mychar" / "a.txt").read_text() == "mychar, 1girl, smile\n"  # kept
    assert "Wrote 2 new caption files" in text
    assert "Captions: every training image has a caption file." in text  # the summary again


def test_wizard_without_a_tagger_does_not_offer(dataset, monkeypatch):
    monkeypatch.delenv("LORA_WIZARD_TAGGER", raising=False)
    out = io.StringIO()
    with create_pipe_input(), create_app_session(output=DummyOutput()):
        show_dataset(draft_for(dataset), Screen(Console(file=out, width=80), load_prompts("en")))  # asks nothing
    assert "Captions missing: 2 images" in out.getvalue()
    assert not (dataset / "10_mychar" / "b.txt").exists()


def test_wizard_shows_a_dataset_problem_and_goes_on(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    write_images(broken / "mychar", {"a.png": ((64, 64), GREY)})  # no <repeats>_ prefix
    out = io.StringIO()
    show_dataset(draft_for(broken), Screen(Console(file=out, width=200), load_prompts("en")))
    assert "Training would stop at this dataset" in out.getvalue() and "10_mychar" in out.getvalue()


def test_the_summary_follows_the_image_folder_question(dataset, tmp_path, monkeypatch):
    from tests.support.wizard_script import Script, run_wizard, typed

    monkeypatch.delenv("LORA_WIZARD_TAGGER", raising=False)
    run = run_wizard(Script({"dataset.img_folder": typed(str(dataset))}), tmp_path / "saved", monkeypatch)
    assert run.outcome.configs[0].dataset.img_folder == str(dataset)
    assert run.output.count("Buckets at 512x512") == 1 and "10_mychar" in run.output
    assert json.loads(run.outcome.saved[0].read_text())["dataset"]["img_folder"] == str(dataset)
