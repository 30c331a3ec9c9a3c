"""Export of training checkpoints to safetensors + config, and loading them back."""

import json

import pytest
import torch

from stemgen.cli import main
from stemgen.data.datamodule import SlakhData
from stemgen.errors import CheckpointError, MissingWeightsError
from stemgen.model.io import load_exported

from ..data.fixtures import make_slakh
from .test_module import _weights_after


def test_export_roundtrip(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")

    def dm():
        return SlakhData(root, codec=str(codec), crop_seconds=1.0, segment_seconds=1.5, batch_size=2, num_workers=0)

    weights, _ = _weights_after(tmp_path / "run", dm, 2, every=2)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    assert main(["export", str(ckpt), str(tmp_path / "export")]) == 0
    model, info = load_exported(tmp_path / "export")
    assert all(torch.equal(weights["model." + k], v) for k, v in model.state_dict().items())
    assert info["codec"]["name"] == str(codec) and info["codec"]["cardinality"] == 64
    assert info["global_step"] == 2 and info["training"]["preset"] == "tiny"
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["model"]["cardinality"] == 64 and not list((tmp_path / "export").glob("*.tmp"))


def test_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.ckpt"), str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert main(["export", str(tmp_path / "other.ckpt"), str(tmp_path / "out")]) == 2
    assert "not a stemgen-train checkpoint" in capsys.readouterr().err
    import argparse

    torch.save({"hyper_parameters": argparse.Namespace(preset="tiny")}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="weights_only"):
        from stemgen.train.export import export_checkpoint

        export_checkpoint(tmp_path / "evil.ckpt", tmp_path / "out")
    with pytest.raises(MissingWeightsError, match="stemgen export"):
        load_exported(tmp_path / "nothing")
