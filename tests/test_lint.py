"""Dataset lint: every problem at once, each naming its file and its fix; errors vs warnings."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from engine.config.schema import TrainConfig
from engine.data import lint
from engine.data.lint import ImageChecks, lint_dataset
from engine.problems import Level


def config(img_folder: Path, **dataset) -> TrainConfig:
    return TrainConfig.model_validate({"dataset": {"img_folder": str(img_folder), **dataset}})


def image(path: Path, size=(96, 128), fmt: str | None = None, caption: str | None = "a caption") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(path, format=fmt)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def by_path(problems) -> dict[str, tuple[Level, str]]:
    return {Path(p.where).name: (p.level, str(p)) for p in problems}


def test_a_clean_dataset_has_no_problems(tmp_path):
    image(tmp_path / "data" / "5_cat" / "a.png")
    image(tmp_path / "data" / "5_cat" / "b.jpg")
    assert lint_dataset(config(tmp_path / "data")) == []


def test_every_problem_at_once_with_file_and_fix(tmp_path):
    data = tmp_path / "data"
    image(data / "5_cat" / "ok.png")
    truncate(image(data / "5_cat" / "cut.png", size=(200, 200)))
    truncate(image(data / "5_cat" / "cut.jpg", size=(200, 200)))
    image(data / "5_cat" / "latin1.png", caption=None).with_suffix(".txt").write_bytes("caf\xe9".encode("latin-1"))
    image(data / "5_cat" / "empty.png", caption="")
    image(data / "5_cat" / "nocap.png", caption=None)
    (data / "5_cat" / "orphan.txt").write_text("no image here", encoding="utf-8")
    image(data / "5_cat" / "anim.gif", fmt="GIF", caption=None)
    image(data / "dogs" / "d.png")  # no repeats prefix
    (data / "3_empty").mkdir()
    image(data / "0_never" / "n.png")  # zero repeats
    image(data / "loose.png", caption=None)  # beside the N_name folders

    problems = lint_dataset(config(data))
    found = by_path(problems)
    errors = {name for name, (level, _) in found.items() if level == Level.ERROR}
    warnings = {name for name, (level, _) in found.items() if level == Level.WARNING}
    assert errors == {"cut.png", "cut.jpg", "latin1.txt", "empty.txt", "dogs", "3_empty", "0_never"}
    assert warnings == {"5_cat", "data"}  # missing caption, orphan, gif; the loose image
    assert "truncated" in found["cut.png"][1] and "re-save it" in found["cut.png"][1]
    assert "truncated" in found["cut.jpg"][1]
    assert "not UTF-8" in found["latin1.txt"][1] and "re-save it as UTF-8" in found["latin1.txt"][1]
    assert "empty" in found["empty.txt"][1]
    assert "'10_dogs'" in found["dogs"][1] and "'10_0_never'" in found["0_never"][1]
    assert "no images" in found["3_empty"][1]
    cat = [str(p) for p in problems if Path(p.where).name == "5_cat"]
    assert any("1 of 6 images have no .txt caption (nocap.png)" in p and "captioned 'cat'" in p for p in cat)
    assert any("orphan.txt" in p and "rename" in p for p in cat)
    assert any("anim.gif" in p and "convert" in p for p in cat)
    assert "loose.png" in found["data"][1] and "not used" in found["data"][1]
    assert all(str(p).startswith(p.where) for p in problems)  # each line starts with its file


def test_folder_level_problems(tmp_path):
    missing = lint_dataset(config(tmp_path / "nope"))
    assert [p.level for p in missing] == [Level.ERROR] and "dataset.img_folder" in str(missing[0])
    (tmp_path / "empty").mkdir()
    assert "empty dataset.img_folder" in str(lint_dataset(config(tmp_path / "empty"))[0])
    image(tmp_path / "flat" / "a.png")
    (flat,) = lint_dataset(config(tmp_path / "flat"))
    assert flat.level == Level.ERROR and "'10_flat'" in str(flat)


def test_regularisation_folder_is_linted_too(tmp_path):
    image(tmp_path / "data" / "2_cat" / "a.png")
    image(tmp_path / "reg" / "person" / "r.png")
    (problem,) = lint_dataset(config(tmp_path / "data", reg_img_folder=str(tmp_path / "reg")))
    assert Path(problem.where).name == "person" and problem.level == Level.ERROR


def test_small_images_when_upscaling_is_off(tmp_path):
    data = tmp_path / "data"
    image(data / "2_x" / "ok.png", size=(400, 400))
    image(data / "2_x" / "small.png", size=(200, 300))
    image(data / "2_x" / "tiny.png", size=(40, 300))
    upscaling = lint_dataset(config(data, min_bucket_reso=256))
    assert upscaling == []  # they are scaled up to a bucket: fine
    found = by_path(lint_dataset(config(data, min_bucket_reso=256, bucket_no_upscale=True)))
    assert found.keys() == {"small.png", "tiny.png"}
    assert found["small.png"][0] == Level.WARNING and "smallest bucket (256 px)" in found["small.png"][1]
    assert found["tiny.png"][0] == Level.ERROR and "bucket_no_upscale=false" in found["tiny.png"][1]


def test_other_caption_extension_is_suggested(tmp_path):
    img = image(tmp_path / "data" / "2_x" / "a.png", caption=None)
    img.with_suffix(".caption").write_text("a tag", encoding="utf-8")
    (problem,) = lint_dataset(config(tmp_path / "data"))
    assert problem.level == Level.WARNING and "caption_extension to .caption" in str(problem)
    assert lint_dataset(config(tmp_path / "data", caption_extension=".caption")) == []


def test_each_image_is_decoded_once_per_preflight(tmp_path, monkeypatch):
    image(tmp_path / "data" / "2_x" / "a.png")
    decoded = []
    real = lint._decode
    monkeypatch.setattr(lint, "_decode", lambda path: decoded.append(path.name) or real(path))
    checks = ImageChecks()
    for _ in range(3):
        assert lint_dataset(config(tmp_path / "data"), checks) == []
    assert decoded == ["a.png"]


def test_the_sample_dataset_is_not_linted():
    assert lint_dataset(TrainConfig()) == []
