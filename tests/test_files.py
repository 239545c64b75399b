"""Atomic file writes: the reader sees the old file or the new one, and no temporary is left."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from healthpredict.files import atomic_path, move_into_place, write_atomically


def test_write_replaces_the_file_with_bytes_or_text(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_text("old")
    assert write_atomically(target, b"\x00binary") == target
    assert target.read_bytes() == b"\x00binary"
    write_atomically(target, "ünïcode")
    assert target.read_text(encoding="utf-8") == "ünïcode"
    assert list(tmp_path.iterdir()) == [target]


def test_the_new_file_is_readable_not_private(tmp_path: Path) -> None:
    # mkstemp creates 0o600: without the chmod a report would be unreadable to others.
    target = write_atomically(tmp_path / "report.html", "<html/>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomically(target, "<html/>", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "w001.parquet"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.exists()
        temporary.write_text("half of the new")
        raise RuntimeError("writer failed")
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_an_interrupt_midway_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model.pkl"
    with pytest.raises(KeyboardInterrupt), atomic_path(target):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_the_path_form_creates_a_missing_target(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with atomic_path(target) as temporary:
        assert not target.exists()  # nothing is visible before the block ends
        temporary.write_text("whole")
    assert target.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [target]


def test_a_missing_folder_is_an_error_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "absent" / "file.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_move_into_place_replaces_the_target(tmp_path: Path) -> None:
    staged, target = tmp_path / ".staged", tmp_path / "out.parquet"
    staged.write_text("new")
    target.write_text("old")
    move_into_place(staged, target)
    assert target.read_text() == "new" and not staged.exists()
