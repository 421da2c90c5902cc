"""Atomic files and folders: the old content stays until the new one is complete, and nothing temporary is left."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from deepforcing.atomic import atomic_dir, atomic_path, write_bytes_atomic, write_text_atomic


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_files_are_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "table.md"
    assert write_text_atomic(path, "old ×\n") == path
    assert path.read_text(encoding="utf-8") == "old ×\n"
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            assert path.read_bytes() == b"new"  # not visible yet
            raise RuntimeError("half-way")
    assert path.read_bytes() == b"new"
    assert listing(tmp_path) == ["sub", "sub/table.md"]


def test_a_folder_is_swapped_in_whole(tmp_path):
    out = tmp_path / "report"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.") and not out.exists()
        (tmp / "a.txt").write_text("1")
    assert listing(tmp_path) == ["report", "report/a.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # a folder's usual permissions, not a temp dir's 0700

    with atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("2")
        assert listing(out) == ["a.txt"]  # the old folder, untouched, until the new one is done
    assert listing(tmp_path) == ["report", "report/b.txt"]


def test_a_failure_leaves_the_old_folder_and_no_temporary_one(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise KeyboardInterrupt
    assert listing(tmp_path) == ["report", "report/a.txt"] and (out / "a.txt").read_text() == "old"


def test_a_symlinked_folder_is_replaced_where_it_points(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_dir(tmp_path / "link") as tmp:
        (tmp / "new.txt").write_text("y")
    assert (tmp_path / "link").is_symlink() and listing(tmp_path / "real") == ["new.txt"]


def test_leftovers_of_a_dead_writer_are_removed_and_a_live_ones_kept(tmp_path):
    host = socket.gethostname().replace(".", "-")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    gone = tmp_path / f".report.{host}-{dead_pid}-0a1b2c3d.partial"
    kept = tmp_path / f".report.{host}-{os.getppid()}-0a1b2c3d.partial"  # our parent runs: not ours to remove
    for d in (gone, kept):
        d.mkdir()
        (d / "x").write_text("partial")
    with atomic_dir(tmp_path / "report") as tmp:
        (tmp / "a.txt").write_text("1")
    assert not gone.exists() and kept.exists()
