"""EnCodec 32 kHz: weight loading from fabricated checkpoints in both real key layouts."""

import json
import sys

import pytest
import torch
import yaml

from stemgen.codec import load_codec
from stemgen.codec.encodec32 import (EncodecCodec, EncodecConfig, encodec_to_transformers_keys,
                                     load_encodec)
from stemgen.errors import AudioError, CheckpointError, MissingWeightsError

# Key names and shapes of the real facebook/encodec_32khz model.safetensors (transformers layout).
REAL_HF_SHAPES = {
    "encoder.layers.0.conv.weight_v": (64, 1, 7),
    "encoder.layers.0.conv.weight_g": (64, 1, 1),
    "encoder.layers.1.block.1.conv.weight_v": (32, 64, 3),
    "encoder.layers.3.conv.weight_v": (128, 64, 8),  # encoder strides run 4, 4, 5, 8
    "encoder.layers.12.conv.weight_v": (1024, 512, 16),
    "encoder.layers.13.lstm.weight_ih_l0": (4096, 1024),
    "encoder.layers.15.conv.weight_v": (128, 1024, 7),
    "decoder.layers.0.conv.weight_v": (1024, 128, 7),
    "decoder.layers.1.lstm.weight_hh_l1": (4096, 1024),
    "decoder.layers.3.conv.weight_v": (1024, 512, 16),
    "decoder.layers.15.conv.bias": (1,),
    "quantizer.layers.0.codebook.embed": (2048, 128),
    "quantizer.layers.3.codebook.embed_avg": (2048, 128),
}


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1234)
    model = EncodecCodec(EncodecConfig())
    with torch.no_grad():  # make the weights unlike a fresh init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def signal():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 32000
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(16000, generator=g))[None]


def test_contract(source, signal):
    tokens = source.encode(signal)
    assert tokens.shape == (1, 4, 25) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 2048
    assert source.frame_rate == 50 and source.hop_length == 640
    assert source.decode(tokens).shape == (1, 25 * 640)
    assert source.decode(tokens[:, :1]).shape == (1, 25 * 640)
    assert "torchaudio" not in sys.modules


def test_transformers_layout_reproduces_tokens(tmp_path, source, signal):
    from safetensors.torch import save_file

    hf = encodec_to_transformers_keys(source.state_dict())
    for key, shape in REAL_HF_SHAPES.items():
        assert tuple(hf[key].shape) == shape, key
    assert not any(".conv.conv." in k or "convtr" in k or "_codebook" in k for k in hf)
    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "encodec", "sampling_rate": 32000, "audio_channels": 1, "codebook_size": 2048,
        "num_filters": 64, "upsampling_ratios": [8, 5, 4, 4], "hidden_size": 128, "num_lstm_layers": 2,
        "norm_type": "weight_norm", "use_causal_conv": False, "use_conv_shortcut": False,
        "pad_mode": "reflect", "target_bandwidths": [2.2]}))
    torch.manual_seed(99)
    loaded = load_codec(tmp_path)
    assert torch.equal(loaded.encode(signal), source.encode(signal))
    tokens = source.encode(signal)
    assert torch.allclose(loaded.decode(tokens), source.decode(tokens), atol=1e-6)


def test_parametrized_weight_norm_names_are_accepted(tmp_path, source, signal):
    sd = {}
    for k, v in encodec_to_transformers_keys(source.state_dict()).items():
        k = k.replace(".weight_g", ".parametrizations.weight.original0")
        k = k.replace(".weight_v", ".parametrizations.weight.original1")
        sd[k] = v
    assert "encoder.layers.0.conv.parametrizations.weight.original1" in sd
    fresh = EncodecCodec(EncodecConfig())
    fresh.load_weights(sd, "transformers")
    assert torch.equal(fresh.encode(signal), source.encode(signal))


def test_audiocraft_layout_reproduces_tokens(tmp_path, signal):
    torch.manual_seed(5)
    cfg = EncodecConfig(pad_mode="constant")
    src = EncodecCodec(cfg)
    state = src.state_dict()
    assert "encoder.model.0.conv.conv.weight_g" in state
    assert "decoder.model.3.convtr.convtr.weight_v" in state
    assert "quantizer.vq.layers.0._codebook.embed" in state
    xp_cfg = yaml.safe_dump({"sample_rate": 32000, "channels": 1,
                             "seanet": {"dimension": 128, "n_filters": 64, "ratios": [8, 5, 4, 4],
                                        "true_skip": True, "pad_mode": "constant", "lstm": 2},
                             "rvq": {"n_q": 4, "bins": 2048}})
    torch.save({"best_state": state, "xp.cfg": xp_cfg, "version": "1.0", "exported": True},
               tmp_path / "compression_state_dict.bin")
    loaded = load_encodec(tmp_path)
    assert loaded.config.pad_mode == "constant"
    assert torch.equal(loaded.encode(signal), src.encode(signal))
    loaded_file = load_encodec(tmp_path / "compression_state_dict.bin")
    assert torch.equal(loaded_file.encode(signal), src.encode(signal))


def test_pickled_objects_are_refused(tmp_path):
    import argparse  # any class outside torch's weights-only allow-list stands for arbitrary code

    torch.save({"best_state": {}, "obj": argparse.Namespace(x=1)}, tmp_path / "compression_state_dict.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_encodec(tmp_path / "compression_state_dict.bin")


def test_wrong_model_is_a_clear_error(tmp_path, source):
    from safetensors.torch import save_file

    hf = encodec_to_transformers_keys(source.state_dict())
    hf["quantizer.layers.0.codebook.embed"] = torch.zeros(1024, 128)  # a 24 kHz-sized codebook
    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"sampling_rate": 32000}))
    with pytest.raises(CheckpointError, match="shape"):
        load_encodec(tmp_path)


def test_missing_weights_say_where_to_put_them(isolated_home):
    with pytest.raises(MissingWeightsError) as err:
        load_codec("encodec_32khz")
    msg = str(err.value)
    assert str(isolated_home / "codecs" / "encodec_32khz") in msg
    assert "config.json" in msg and "compression_state_dict.bin" in msg


def test_bad_audio_is_rejected(source):
    with pytest.raises(AudioError, match="shorter than one codec frame"):
        source.encode(torch.zeros(1, 100))
    with pytest.raises(AudioError, match="NaN"):
        source.encode(torch.full((1, 1280), float("nan")))
