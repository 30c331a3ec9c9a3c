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


def test_atomic_write_gives_a_new_file_the_usual_permissions(tmp_path):
    """safetensors writes owner-only files; an export written through atomic_write is readable
    as any new file is (0666 less the umask)."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        target = atomic_write(tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, str(tmp)))
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        os.umask(0o077)
        private = atomic_write(tmp_path / "p.txt", lambda tmp: tmp.write_text("x"))
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)
