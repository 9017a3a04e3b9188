import os

import pytest

from liverseg_monai.io.atomic import all_or_none, atomic_path, atomic_write_text, readable_path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_all_or_none_publishes_the_files_together_at_the_end(tmp_path):
    with all_or_none():
        atomic_write_text(tmp_path / "case_seg.txt", "mask")
        atomic_write_text(tmp_path / "sub" / "case_overlay.txt", "overlay")
        assert not (tmp_path / "case_seg.txt").exists()  # held back until the block ends
        assert readable_path(tmp_path / "case_seg.txt").read_text() == "mask"
    assert (tmp_path / "case_seg.txt").read_text() == "mask"
    assert (tmp_path / "sub" / "case_overlay.txt").read_text() == "overlay"
    assert _names(tmp_path) == ["case_seg.txt", "sub"] and _names(tmp_path / "sub") == ["case_overlay.txt"]
    assert readable_path(tmp_path / "case_seg.txt") == tmp_path / "case_seg.txt"


def test_a_failure_in_the_block_leaves_no_file_and_no_temporary(tmp_path):
    (tmp_path / "old_seg.txt").write_text("previous run")
    with pytest.raises(RuntimeError, match="DICOM-SEG failed"):
        with all_or_none():
            atomic_write_text(tmp_path / "case_seg.txt", "mask")
            atomic_write_text(tmp_path / "old_seg.txt", "new")
            raise RuntimeError("DICOM-SEG failed")
    assert _names(tmp_path) == ["old_seg.txt"]
    assert (tmp_path / "old_seg.txt").read_text() == "previous run"


def test_nested_blocks_join_the_outer_one_and_the_last_write_wins(tmp_path):
    with all_or_none():
        with all_or_none():
            atomic_write_text(tmp_path / "a.txt", "first")
        assert not (tmp_path / "a.txt").exists()
        atomic_write_text(tmp_path / "a.txt", "second")
    assert _names(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "second"


def test_a_failed_rename_takes_back_the_files_already_renamed(tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    with pytest.raises(OSError, match="disk full"):
        with all_or_none():
            atomic_write_text(tmp_path / "a.txt", "a")
            atomic_write_text(tmp_path / "b.txt", "b")
            monkeypatch.setattr(os, "replace", failing_replace)
    assert _names(tmp_path) == []


def test_atomic_path_outside_a_block_renames_at_once(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.startswith(".x.") and tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"1")
    assert _names(tmp_path) == ["x.nii.gz"]
