import os

import pytest

from stemgen.paths import atomic_write, home


def test_atomic_write_replaces_in_one_step(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write(target, lambda tmp: tmp.write_text("one"))
    atomic_write(target, lambda tmp: tmp.write_text("two"))
    assert target.read_text() == "two" and os.listdir(target.parent) == ["f.json"]


def test_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"


def test_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEMGEN_HOME", str(tmp_path / "h"))
    assert home() == tmp_path / "h"
