"""Folder-wide caption edits (`dataset clean`, `dataset edit`): backups first, atomic writes, dry runs."""

import os
from pathlib import Path

import pytest

from engine.fileio import atomic_write
from engine.prep.backup import CaptionBackup
from engine.prep.edit import apply_changes, clean_rule, plan_changes, tag_edit_rule
from tests.support.prep_models import write_images
from wizard.app import main

GREY = (128, 128, 128)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "dataset"
    write_images(
        root / "10_mychar",
        {"a.png": ((64, 64), GREY), "b.png": ((64, 64), GREY), "c.png": ((64, 64), GREY), "d.png": ((64, 64), GREY)},
        {
            "a.png": "1girl,solo, long_hair ,smile\nsecond line kept\n",
            "b.png": "1girl, solo, smile\n",  # already clean
            "c.png": "a young woman sitting on a bench\n",
        },
    )
    write_images(root / "1_reg", {"r.png": ((64, 64), GREY)}, {"r.png": "mychar, 2girls, red hair, blonde_hair\n"})
    (root / "10_mychar" / "orphan.txt").write_text("no_image_for_me\n", encoding="utf-8")  # not an image's caption
    return root


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (read(p), p.stat().st_mtime_ns) for p in sorted(root.rglob("*.txt"))}


def test_plan_lists_only_real_changes(dataset):
    changes = plan_changes(dataset, ".txt", clean_rule())
    assert [(c.path.name, c.old, c.new) for c in changes] == [
        ("a.txt", "1girl,solo, long_hair ,smile", "1girl, solo, long hair, smile"),
        ("c.txt", "a young woman sitting on a bench", "a girl sitting on a bench"),
        ("r.txt", "mychar, 2girls, red hair, blonde_hair", "mychar, 2girls"),
    ]


def test_clean_backs_up_then_rewrites(dataset, capsys):
    before = snapshot(dataset)
    assert main(["dataset", "clean", str(dataset)]) == 0
    out = capsys.readouterr().out.replace("\n", " ")

    mychar = dataset / "10_mychar"
    assert read(mychar / "a.txt") == "1girl, solo, long hair, smile\nsecond line kept\n"  # only line 1 changes
    assert read(mychar / "c.txt") == "a girl sitting on a bench\n"
    assert read(dataset / "1_reg" / "r.txt") == "mychar, 2girls\n"
    assert snapshot(dataset)["10_mychar/b.txt"] == before["10_mychar/b.txt"]  # untouched, same mtime
    assert read(mychar / "orphan.txt") == "no_image_for_me\n"

    [backup] = [p for p in dataset.iterdir() if p.name.startswith(".caption-backup-")]
    kept = {str(p.relative_to(backup)): read(p) for p in backup.rglob("*.txt")}
    assert kept == {
        "10_mychar/a.txt": before["10_mychar/a.txt"][0],
        "10_mychar/c.txt": before["10_mychar/c.txt"][0],
        "1_reg/r.txt": before["1_reg/r.txt"][0],
    }
    assert "Changed 3 caption files." in out and str(backup) in out


def test_dry_run_shows_the_diff_and_writes_nothing(dataset, capsys):
    before = snapshot(dataset)
    assert main(["dataset", "clean", str(dataset), "--dry-run"]) == 0
    out = capsys.readouterr().out

    assert snapshot(dataset) == before
    assert not [p for p in dataset.iterdir() if p.name.startswith(".")]
    assert "10_mychar/a.txt\n  - 1girl,solo, long_hair ,smile\n  + 1girl, solo, long hair, smile\n" in out
    assert "3 caption files would change (dry run: nothing was written)" in out


def test_clean_again_changes_nothing(dataset, capsys):
    assert main(["dataset", "clean", str(dataset)]) == 0
    before = snapshot(dataset)
    assert main(["dataset", "clean", str(dataset)]) == 0
    assert snapshot(dataset) == before
    assert "Nothing to change" in capsys.readouterr().out
    assert len([p for p in dataset.iterdir() if p.name.startswith(".caption-backup-")]) == 1


def test_edit_trigger_remove_rename(dataset, capsys):
    code = main(["dataset", "edit", str(dataset / "10_mychar"), "--trigger", "mychar", "--remove", "smile",
                 "--rename", "1girl,one girl"])
    assert code == 0
    mychar = dataset / "10_mychar"
    assert read(mychar / "a.txt") == "mychar, one girl, solo, long_hair\nsecond line kept\n"
    assert read(mychar / "b.txt") == "mychar, one girl, solo\n"
    assert read(mychar / "c.txt") == "mychar, a young woman sitting on a bench\n"
    assert read(dataset / "1_reg" / "r.txt") == "mychar, 2girls, red hair, blonde_hair\n"  # not below the folder given
    assert "Changed 3 caption files." in capsys.readouterr().out


def test_a_trigger_already_first_changes_nothing(dataset):
    rule = tag_edit_rule(trigger="mychar")
    assert rule("mychar,  1girl") == "mychar,  1girl"  # spacing kept when nothing changes
    assert rule("1girl, mychar") == "mychar, 1girl"


def test_edit_needs_something_to_do(dataset, capsys):
    assert main(["dataset", "edit", str(dataset)]) == 2
    assert "--trigger WORD" in capsys.readouterr().out


def test_two_jobs_in_the_same_second_get_two_backups(dataset):
    first, second = CaptionBackup(dataset, stamp="20260101-000000"), CaptionBackup(dataset, stamp="20260101-000000")
    first.keep(dataset / "10_mychar" / "a.txt")
    second.keep(dataset / "10_mychar" / "a.txt")
    assert first.folder != second.folder and first.folder.is_dir() and second.folder.is_dir()


def test_interrupted_edit_keeps_every_replaced_original(dataset, monkeypatch, capsys):
    import engine.prep.edit as edit

    before = snapshot(dataset)
    written = []

    def interrupted(path, text, *, overwrite=False):
        if written:  # the second file: Ctrl-C while it is being written
            def half(tmp):
                tmp.write_text(text[:3], encoding="utf-8")
                raise KeyboardInterrupt
            return atomic_write(path, half, overwrite=overwrite)
        written.append(path)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)

    monkeypatch.setattr(edit, "atomic_write_text", interrupted)
    assert main(["dataset", "clean", str(dataset)]) == 130

    after = snapshot(dataset)
    [backup] = [p for p in dataset.iterdir() if p.name.startswith(".caption-backup-")]
    changed = [name for name in before if after[name][0] != before[name][0]]
    assert changed == ["10_mychar/a.txt"]  # the first change only; the second file is whole and unchanged
    for name in ("10_mychar/a.txt", "10_mychar/c.txt"):  # both originals were copied before their write
        assert read(backup / name) == before[name][0]
    assert not [p for p in dataset.rglob(".*.tmp")]
    assert "Stopped: 1 of 3 caption files changed" in capsys.readouterr().out.replace("\n", " ")


def test_a_caption_that_is_not_utf8_is_named(dataset, capsys):
    (dataset / "10_mychar" / "b.txt").write_bytes(b"caf\xe9\n")
    assert main(["dataset", "clean", str(dataset)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "b.txt: caption file is not UTF-8" in out
    assert not [p for p in dataset.iterdir() if p.name.startswith(".")]  # nothing was changed


def test_apply_changes_reports_progress(dataset):
    class Recorder:
        def __init__(self):
            self.total, self.items = None, []

        def started(self, total):
            self.total = total

        def advanced(self, item):
            self.items.append(item)

    recorder = Recorder()
    changes = plan_changes(dataset, ".txt", clean_rule())
    result = apply_changes(changes, CaptionBackup(dataset), recorder)
    assert recorder.total == 3 and recorder.items == result.changed == [c.path for c in changes]
    assert os.listdir(result.backup.folder) == sorted(os.listdir(result.backup.folder))  # exists, readable
