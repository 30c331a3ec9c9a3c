"""Two-process CPU DDP (gloo) through stemgen-train: Lightning's strategy, no code of our own."""

import subprocess
import sys
from pathlib import Path

import pytest

from ..data.fixtures import make_slakh


@pytest.mark.slow
def test_two_process_ddp_runs_a_few_steps(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    exe = Path(sys.executable).parent / "stemgen-train"
    cmd = [str(exe), "--data", "slakh", "--data.root", str(root), "--data.codec", str(codec),
           "--data.crop_seconds", "1.0", "--data.segment_seconds", "1.5", "--data.batch_size", "1",
           "--data.num_workers", "0", "--model.preset", "tiny", "--trainer.max_steps", "3",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
           "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    log = out.stdout + out.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # the second process joined
    assert list((tmp_path / "run").rglob("*.ckpt"))
