"""Building and caching the C++ CPU extensions (stemgen.cpu_kernels)."""

import torch

from stemgen import cpu_kernels


def test_build_directory_follows_torch_extensions_dir_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    a = cpu_kernels.build_directory("stemgen_fused_x")
    assert a.name == "stemgen_fused_x" and a.parent.parent == tmp_path / "ext"
    assert "torch" + torch.__version__.replace("+", "_").replace(".", "") in a.parent.name
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # not in the stemgen home (every test has its own): built once per machine
    assert cpu_kernels.build_directory("stemgen_fused_x").parent.parent == tmp_path / "cache" / "torch_extensions"


def test_a_stale_build_lock_is_removed_and_a_live_one_waited_for(tmp_path, caplog):
    import os
    import threading
    import time

    lock = tmp_path / "lock"
    assert cpu_kernels.wait_for_build_lock(tmp_path) is False  # no build in progress
    # a build killed 20 minutes ago left its lock: removed, with a warning, instead of a hang
    lock.touch()
    os.utime(lock, (time.time() - 1200, time.time() - 1200))
    assert cpu_kernels.wait_for_build_lock(tmp_path) is True and not lock.exists()
    assert "stale build lock" in caplog.text
    # another process building now: wait until it removes its lock, leave nothing behind
    lock.touch()
    threading.Timer(0.3, lock.unlink).start()
    start = time.perf_counter()
    assert cpu_kernels.wait_for_build_lock(tmp_path, poll=0.05) is False
    assert time.perf_counter() - start >= 0.25 and not lock.exists()
