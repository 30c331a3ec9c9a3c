"""The LightningDataModules: batches of audio and tokens, cached evaluation tokens, errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stemgen.data.datamodule import ChoralesData, SlakhData, StemsData, TokenCache
from stemgen.data.songs import DatasetError
from stemgen.spectra import chroma_codes

from .fixtures import make_slakh, make_stem_folder


@pytest.fixture()
def codec_dir(tmp_path, tiny_codec):
    return tiny_codec.save(tmp_path / "codec")


def test_slakh_batches_carry_audio_and_tokens(tmp_path, codec_dir, tiny_codec):
    root = make_slakh(tmp_path / "slakh")
    dm = SlakhData(root, codec=str(codec_dir), crop_seconds=1.0, segment_seconds=1.5, batch_size=2,
                   num_workers=0)
    dm.setup("fit")
    assert dm.skipped["train"] == 3  # broken YAML, one-stem track, corrupt FLAC
    batch = next(iter(dm.train_dataloader()))
    assert batch["context"].shape == batch["target"].shape == (2, 32000)
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["context_tokens"].shape == batch["target_tokens"].shape == (2, 4, 50)
    assert torch.equal(batch["target_tokens"], tiny_codec.encode(batch["target"]))
    # the context's pitch-class profile per token frame, for a model that reads it (context_chroma)
    assert batch["context_chroma"].shape == (2, 50) and batch["context_chroma"].dtype == torch.int64
    assert np.array_equal(batch["context_chroma"][1].numpy(),
                          chroma_codes(batch["context"][1].numpy(), 32000, tiny_codec.hop_length, 50))
    assert batch["instrument"].dtype == torch.long
    # a module that does not read them spares the main process their STFTs; one that does gets them
    for reads in (False, True):
        dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(reads_context_chroma=reads))
        again = dm.on_after_batch_transfer({k: batch[k] for k in ("context", "target")}, 0)
        assert torch.equal(again["context_tokens"], batch["context_tokens"])
        assert ("context_chroma" in again) is reads


def test_eval_tokens_are_cached_and_reused(tmp_path, codec_dir, isolated_home):
    root = make_slakh(tmp_path / "slakh")
    dm = SlakhData(root, codec=str(codec_dir), crop_seconds=1.0, segment_seconds=1.5, num_workers=0)
    dm.setup("validate")
    val = dm.datasets["validation"]
    assert isinstance(val, TokenCache) and val.context.shape == (len(val), 4, 50)
    files = list((isolated_home / "tokens").glob("*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = SlakhData(root, codec=str(codec_dir), crop_seconds=1.0, segment_seconds=1.5, num_workers=0)
    again.setup("validate")
    assert files[0].stat().st_mtime_ns == stamp
    assert torch.equal(again.datasets["validation"].target, val.target)
    batch = next(iter(again.val_dataloader()))
    assert dm.on_after_batch_transfer(batch, 0)["context_tokens"].shape == (len(val), 4, 50)


def test_orig_variant_and_bad_arguments(tmp_path, codec_dir):
    root = make_slakh(tmp_path / "slakh")
    dm = SlakhData(root, variant="orig", codec=str(codec_dir), crop_seconds=1.0, segment_seconds=1.5,
                   tokens=False, num_workers=0)
    dm.setup("validate")
    assert {s.id for s in dm.datasets["validation"].songs} == {"Track01501", "Track01502"}
    with pytest.raises(ValueError, match="redux"):
        SlakhData(root, variant="v2")
    with pytest.raises(DatasetError, match="--data.root"):
        SlakhData(None, codec=str(codec_dir)).setup("fit")
    with pytest.raises(DatasetError, match="does not exist"):
        SlakhData(tmp_path / "missing", codec=str(codec_dir)).setup("fit")


def test_user_stems_module(tmp_path, codec_dir):
    root = tmp_path / "mine"
    make_stem_folder(root / "train")
    make_stem_folder(root / "validation")
    dm = StemsData(root, codec=str(codec_dir), crop_seconds=1.0, segment_seconds=2.0, tokens=False,
                   num_workers=0, batch_size=1)
    dm.setup("fit")
    item = next(iter(dm.train_dataloader()))
    assert item["context"].shape == (1, 32000) and item["song"] == ["my_song"]


def test_chorales_module_renders_when_empty(tmp_path, codec_dir):
    dm = ChoralesData(tmp_path / "ch", limit=3, codec=str(codec_dir), crop_seconds=2.0, tokens=False,
                      num_workers=0, batch_size=1)
    dm.prepare_data()
    dm.setup("test")
    assert len(dm.datasets["test"].songs) == 1


def test_cached_training_tokens(tmp_path, codec_dir):
    root = make_slakh(tmp_path / "slakh")
    dm = SlakhData(root, codec=str(codec_dir), crop_seconds=1.0, segment_seconds=1.5, batch_size=2,
                   num_workers=0, train_token_epochs=3)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert isinstance(train, TokenCache) and len(train) == 3 * 4  # 3 draws of each of 4 segments
    assert not torch.equal(train.context[0], train.context[4])  # another draw of segment 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["context_tokens"].shape == (2, 4, 50) and "context" not in batch
    assert dm.on_after_batch_transfer(batch, 0) is batch
