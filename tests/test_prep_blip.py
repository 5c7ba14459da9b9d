"""BLIP captions with a tiny random BLIP built from a BlipConfig (tests/support/prep_models.py).

Its captions are random words of a 20-word vocabulary; what is checked is the path around the
model: the files written, the prompt cut, prefix and suffix, the decoding settings (greedy beam
search gives what transformers' own generate gives), the seed, and the errors for wrong folders.
"""

import json
import shutil
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.prep.blip import BlipCaptioner, BlipOptions, caption_from_output
from engine.prep.label import LabelJob
from tests.support.prep_models import BLIP_WORDS, write_blip, write_images
from wizard.app import main

WORDS = set(BLIP_WORDS) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    return write_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "dataset"
    write_images(root / "5_cat", {"a.png": ((40, 30), (200, 30, 30)), "b.jpg": ((30, 40), (30, 30, 200))})
    write_images(root / "5_cat", {"c.png": ((32, 32), (0, 0, 0))}, {"c.png": "a black square\n"})
    return root


def captions(root: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.txt"))}


def test_captions_are_written_with_prefix_and_suffix(dataset, blip):
    job = LabelJob.for_folder(dataset, ".txt")
    job.run(BlipCaptioner(blip, BlipOptions(prefix="mycat, ", suffix=", photo", max_length=14, min_length=10)))

    written = captions(dataset)
    assert written["c.txt"] == "a black square\n"  # an existing caption is kept
    for name in ("a.txt", "b.txt"):
        text = written[name]
        assert text.startswith("mycat, ") and text.endswith(", photo\n")
        words = text.removeprefix("mycat, ").removesuffix(", photo\n").split()
        assert words and set(words) <= WORDS
    assert [p.name for p in job.result.written] == ["a.txt", "b.txt"]


def test_greedy_decoding_is_what_transformers_generates(dataset, blip):
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    options = BlipOptions(beam_search=True, num_beams=1, max_length=12, min_length=3)
    image = Image.open(dataset / "5_cat" / "a.png")
    [ours] = BlipCaptioner(blip, options).label([image])

    processor = BlipProcessor.from_pretrained(blip, local_files_only=True)
    model = BlipForConditionalGeneration.from_pretrained(blip, local_files_only=True).eval()
    inputs = processor(images=[image.convert("RGB")], text=["a picture of"], return_tensors="pt")
    ids = model.generate(**inputs, num_beams=1, do_sample=False, max_length=12, min_length=3)
    reference = processor.decode(ids[0], skip_special_tokens=True)

    assert reference.startswith("a picture of")
    assert ours == reference.removeprefix("a picture of").strip()


def test_sampling_is_repeatable_with_the_seed(dataset, blip):
    images = [__import__("PIL.Image", fromlist=["Image"]).open(dataset / "5_cat" / n) for n in ("a.png", "b.jpg")]
    first = BlipCaptioner(blip, BlipOptions(max_length=12, seed=7)).label(images)
    again = BlipCaptioner(blip, BlipOptions(max_length=12, seed=7)).label(images)
    assert first == again


def test_the_prompt_is_cut_from_the_output():
    options = BlipOptions(prefix="sks, ")
    assert caption_from_output("a picture of a cat on a sofa", options) == "sks, a cat on a sofa"
    assert caption_from_output("two cats", BlipOptions(prompt="")) == "two cats"


def test_wrong_blip_folders_say_what_is_missing(tmp_path, blip):
    with pytest.raises(ModelError, match="not a folder"):
        BlipCaptioner(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json missing"):
        BlipCaptioner(empty)

    clip = shutil.copytree(blip, tmp_path / "clip")
    config = json.loads((clip / "config.json").read_text())
    (clip / "config.json").write_text(json.dumps({**config, "model_type": "clip"}))
    with pytest.raises(ModelError, match="model_type is 'clip', not 'blip'"):
        BlipCaptioner(clip)

    no_weights = shutil.copytree(blip, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no weights \(model.safetensors"):
        BlipCaptioner(no_weights)


def test_cli_caption(dataset, blip, capsys):
    assert main(["dataset", "caption", str(dataset), "--blip", str(blip), "--max-length", "10", "--prefix", "cat, "]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "2 to do" in out and "Wrote 2 new caption files" in out
    assert captions(dataset)["a.txt"].startswith("cat, ")


def test_cli_wrong_blip_folder_is_bad_input(dataset, tmp_path, capsys):
    folder = tmp_path / "some_model"
    folder.mkdir()
    assert main(["dataset", "caption", str(dataset), "--blip", str(folder)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"BLIP folder {folder}: config.json missing" in out
    assert set(captions(dataset)) == {"c.txt"}  # nothing written
