"""WD14 tagging with a tiny ONNX tagger built by the test (tests/support/prep_models.py).

Each tag's score is fixed or follows the image's mean colour, so the expected caption of every
image is known: a red square gets "red background", a red 2:1 image padded to a square with white
also gets "blue background" (half its pixels are then white, B = 127.5 -> score 0.5), and a fully
transparent image is put on white (both backgrounds).
"""

import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import MissingPackageError, ModelError
from engine.fileio import atomic_write
from engine.prep.label import LabelJob
from engine.prep.tagger import TaggerOptions, WD14Tagger, preprocess
from tests.support.prep_models import TAGGER_LABELS, write_images, write_tagger
from wizard.app import main

RED, BLUE = (255, 0, 0), (0, 0, 255)
BASE = ["1girl", "long hair"]
TAIL = ["^_^", "watermark", "hatsune miku"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    return write_tagger(tmp_path_factory.mktemp("tagger") / "wd-tiny-tagger")


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "dataset"
    write_images(root / "10_mychar", {"red.png": ((32, 32), RED), "blue.png": ((32, 32), BLUE), "wide.png": ((32, 16), RED)})
    write_images(root / "2_other", {"done.png": ((32, 32), RED)}, {"done.png": "my own caption\n"})
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(root / "2_other" / "ghost.png")
    return root


def line(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def tag_all(root: Path, tagger: Path, **options) -> LabelJob:
    overwrite = options.pop("overwrite", False)
    job = LabelJob.for_folder(root, ".txt", overwrite=overwrite)
    job.run(WD14Tagger(tagger, TaggerOptions(**options)))
    return job


def test_tags_are_written_for_images_without_caption(dataset, tagger):
    job = tag_all(dataset, tagger)
    mychar, other = dataset / "10_mychar", dataset / "2_other"

    assert line(mychar / "red.txt") == ", ".join(BASE + ["red background"] + TAIL) + "\n"
    assert line(mychar / "blue.txt") == ", ".join(BASE + ["blue background"] + TAIL) + "\n"
    # padded to a square with white: half the pixels are white, so "blue background" scores 0.5
    assert line(mychar / "wide.txt") == ", ".join(BASE + ["red background", "blue background"] + TAIL) + "\n"
    # transparency is put on white
    assert line(other / "ghost.txt") == ", ".join(BASE + ["red background", "blue background"] + TAIL) + "\n"
    assert line(other / "done.txt") == "my own caption\n"  # never overwritten without --overwrite
    assert sorted(p.name for p in job.result.written) == ["blue.txt", "ghost.txt", "red.txt", "wide.txt"]
    assert job.result.skipped == [other / "done.png"]
    assert job.backup.folder is None  # nothing replaced, no backup folder


def test_thresholds_undesired_replacement_and_order(dataset, tagger):
    tag_all(
        dataset / "10_mychar",
        tagger,
        general_threshold=0.85,  # keeps 1girl 0.9, red background 0.98, watermark 0.95
        character_threshold=0.6,  # drops hatsune miku 0.5
        replacements={"1girl": "solo girl"},
        always_first=("watermark", "red background"),
        trigger="mychar",
    )
    assert line(dataset / "10_mychar" / "red.txt") == "mychar, watermark, red background, solo girl\n"

    tag_all(dataset / "2_other", tagger, undesired=("watermark", "long_hair"), general_threshold=0.75)
    # undesired tags match with or without underscores
    assert line(dataset / "2_other" / "ghost.txt") == "1girl, red background, blue background, hatsune miku\n"


def test_underscores_can_be_kept(dataset, tagger):
    tag_all(dataset / "10_mychar", tagger, underscores_to_spaces=False)
    assert line(dataset / "10_mychar" / "red.txt") == "1girl, long_hair, red_background, ^_^, watermark, hatsune_miku\n"


def test_overwrite_backs_up_the_original_first(dataset, tagger):
    job = tag_all(dataset / "2_other", tagger, overwrite=True)

    assert line(dataset / "2_other" / "done.txt").startswith("1girl, long hair, red background")
    backup = job.backup.folder
    assert backup.parent == dataset / "2_other" and backup.name.startswith(".caption-backup-")
    assert line(backup / "done.txt") == "my own caption\n"
    assert [p.name for p in job.result.replaced] == ["done.txt"]


def test_a_model_with_a_fixed_batch_size(tmp_path, dataset):
    fixed = write_tagger(tmp_path / "fixed", batch=1)
    tagger = WD14Tagger(fixed, TaggerOptions(batch_size=3))
    assert tagger.batch_size == 1  # the model's own batch wins
    job = LabelJob.for_folder(dataset / "10_mychar", ".txt")
    job.run(tagger)
    assert len(job.result.written) == 3


def test_preprocess_is_bgr_on_a_white_square():
    image = Image.new("RGB", (4, 2), (10, 20, 30))
    array = preprocess(image, 4)
    assert array.shape == (4, 4, 3) and str(array.dtype) == "float32"
    assert array[0, 0].tolist() == [255.0, 255.0, 255.0]  # the padding row above
    assert array[1, 0].tolist() == [30.0, 20.0, 10.0]  # BGR


# ---- wrong model folders --------------------------------------------------------------------------


def test_wrong_tagger_folders_say_what_is_missing(tmp_path):
    with pytest.raises(ModelError, match="not a folder"):
        WD14Tagger(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"model.onnx and selected_tags.csv missing \(it is empty\)") as info:
        WD14Tagger(empty)
    assert str(empty) in str(info.value)

    only_model = write_tagger(tmp_path / "only_model")
    (only_model / "selected_tags.csv").unlink()
    with pytest.raises(ModelError, match="selected_tags.csv missing"):
        WD14Tagger(only_model)


def test_a_csv_without_the_expected_columns(tmp_path):
    folder = write_tagger(tmp_path / "t")
    (folder / "selected_tags.csv").write_text("id,tag\n1,smile\n", encoding="utf-8")
    with pytest.raises(ModelError, match="tag_id,name,category") as info:
        WD14Tagger(folder)
    assert str(folder / "selected_tags.csv") in str(info.value)


def test_a_broken_model_file_and_a_label_count_mismatch(tmp_path):
    broken = write_tagger(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        WD14Tagger(broken)

    mismatch = write_tagger(tmp_path / "mismatch")
    write_tagger(tmp_path / "fewer", labels=TAGGER_LABELS[:-1])
    (mismatch / "selected_tags.csv").write_bytes((tmp_path / "fewer" / "selected_tags.csv").read_bytes())
    with pytest.raises(ModelError, match="gives 12 scores but selected_tags.csv lists 11 tags"):
        WD14Tagger(mismatch)


def test_missing_onnxruntime_names_the_install_command(monkeypatch, tagger):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(MissingPackageError, match=r"pip install 'lora-wizard\[tagger\]'"):
        WD14Tagger(tagger)


# ---- the command line ---------------------------------------------------------------------------------


def test_cli_tag_writes_and_counts(dataset, tagger, capsys):
    code = main(["dataset", "tag", str(dataset), "--tagger", str(tagger), "--trigger", "mychar", "--batch-size", "3"])
    out = capsys.readouterr().out.replace("\n", " ")

    assert code == 0
    assert line(dataset / "10_mychar" / "red.txt").startswith("mychar, 1girl, long hair")
    assert line(dataset / "2_other" / "ghost.txt").startswith("mychar, 1girl, long hair")  # the batch of 1 after 3
    assert "5 images under" in out and "4 to do" in out and "Wrote 4 new caption files" in out


def test_cli_uses_the_tagger_of_the_environment(dataset, tagger, monkeypatch, capsys):
    monkeypatch.setenv("LORA_WIZARD_TAGGER", str(tagger))
    assert main(["dataset", "tag", str(dataset / "10_mychar")]) == 0
    assert (dataset / "10_mychar" / "blue.txt").is_file()


def test_cli_wrong_tagger_folder_is_bad_input(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORA_WIZARD_TAGGER", raising=False)
    wrong = tmp_path / "not-a-tagger"
    wrong.mkdir()
    (wrong / "readme.md").write_text("hello")

    assert main(["dataset", "tag", str(dataset), "--tagger", str(wrong)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert str(wrong) in out and "model.onnx and selected_tags.csv missing" in out and "readme.md" in out
    assert not list(dataset.rglob("*.txt"))[1:]  # only the caption that was there before

    assert main(["dataset", "tag", str(dataset)]) == 2
    assert "--tagger FOLDER" in capsys.readouterr().out


def test_ctrl_c_leaves_no_half_written_caption(dataset, tagger, monkeypatch, capsys):
    import engine.prep.label as label

    calls = []

    def interrupted_write(path, text, *, overwrite=False):
        calls.append(path)
        if len(calls) == 2:  # the second file: half written, then Ctrl-C

            def half(tmp):
                tmp.write_text(text[: len(text) // 2], encoding="utf-8")
                raise KeyboardInterrupt

            return atomic_write(path, half, overwrite=overwrite)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)

    monkeypatch.setattr(label, "atomic_write_text", interrupted_write)
    code = main(["dataset", "tag", str(dataset / "10_mychar"), "--tagger", str(tagger)])

    assert code == 130
    first, second = calls
    assert line(first).endswith("hatsune miku\n")  # complete
    assert not second.exists()  # not half-written
    assert not [p for p in (dataset / "10_mychar").iterdir() if p.name.startswith(".")]  # no temp file left
    assert "Stopped: 1 caption files written" in capsys.readouterr().out.replace("\n", " ")

    monkeypatch.undo()  # running again tags the rest
    assert main(["dataset", "tag", str(dataset / "10_mychar"), "--tagger", str(tagger)]) == 0
    assert len(list((dataset / "10_mychar").glob("*.txt"))) == 3


def test_two_images_of_one_name_do_not_share_a_caption(tmp_path, tagger):
    folder = write_images(tmp_path / "1_x", {"a.png": ((32, 32), RED), "a.jpg": ((32, 32), BLUE)}, {"a.png": "old\n"})
    job = tag_all(folder, tagger, overwrite=True)
    assert "red background" not in line(folder / "a.txt")  # a.jpg (blue) came first and wrote it
    assert [p.name for p, _ in job.result.failed] == ["a.png"]
    assert line(job.backup.folder / "a.txt") == "old\n"
