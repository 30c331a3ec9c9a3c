"""stemgen-train: data aliases, codec-linked model shape, a short run that writes a checkpoint."""

import pytest

from stemgen.train.cli import DATA_ALIASES, expand_data_alias, main

from ..data.fixtures import make_slakh


def test_data_aliases():
    assert expand_data_alias(["--data", "slakh", "--data.root", "x"]) == [
        "--data", DATA_ALIASES["slakh"], "--data.root", "x"]
    assert expand_data_alias(["--data=chorales"]) == ["--data=" + DATA_ALIASES["chorales"]]
    assert expand_data_alias(["--data.root", "stems"]) == ["--data.root", "stems"]


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--ckpt_path" in out and "--model.preset" in out and "--trainer.max_steps" in out


def test_short_run_writes_a_checkpoint(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    main(["--data", "slakh", "--data.root", str(root), "--data.codec", str(codec), "--data.crop_seconds", "1.0",
          "--data.segment_seconds", "1.5", "--data.batch_size", "2", "--data.num_workers", "0",
          "--model.preset", "tiny", "--trainer.max_steps", "2", "--trainer.accelerator", "cpu",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
          "--trainer.limit_val_batches", "1", "--trainer.logger", "false"])
    assert list((tmp_path / "run").rglob("*.ckpt"))  # the model's V was linked to the codec's 64
