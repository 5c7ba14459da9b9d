"""Atomic writes: a write that fails half-way (in the writer, or in the final rename) never leaves
a truncated file under the final name, nor its temporary file; the error reaches the caller."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engine.fileio import atomic_write


class HalfWay(Exception):
    pass


def write_half_then_raise(tmp: Path) -> None:
    with open(tmp, "wb") as handle:
        handle.write(b"x" * 4096)  # the first half of the file is on disk
        handle.flush()
        raise HalfWay("the disk went away")


def test_a_writer_that_raises_half_way_leaves_nothing(tmp_path):
    target = tmp_path / "last.safetensors"
    with pytest.raises(HalfWay):
        atomic_write(target, write_half_then_raise)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_file_whole(tmp_path):
    target = tmp_path / "journal.json"
    target.write_text('{"complete": true}', encoding="utf-8")
    with pytest.raises(HalfWay):
        atomic_write(target, write_half_then_raise, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]
    assert target.read_text(encoding="utf-8") == '{"complete": true}'


def test_a_failed_rename_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    target = tmp_path / "last.safetensors"
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"a whole file"))
    assert list(tmp_path.iterdir()) == []


def test_a_whole_write_lands_under_the_final_name_only(tmp_path):
    target = atomic_write(tmp_path / "last.safetensors", lambda tmp: tmp.write_bytes(b"a whole file"))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    assert target.read_bytes() == b"a whole file"
