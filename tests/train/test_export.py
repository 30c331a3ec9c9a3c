"""Export of training checkpoints to safetensors + config, and loading them back."""

import json
from pathlib import Path

import pytest
import torch

from stemgen.cli import main
from stemgen.data.datamodule import SlakhData
from stemgen.errors import CheckpointError, MissingWeightsError
from stemgen.codec.embedded import EmbeddedCodec
from stemgen.api import load_model
from stemgen.model.io import load_exported
from stemgen.paths import demo_model_dir
from stemgen.sampling.settings import SamplingSettings
from stemgen.train.export import export_checkpoint
from stemgen.train.module import StemGenLightning

from ..data.fixtures import make_slakh
from .test_module import _weights_after


def _data_factory(tmp_path, tiny_codec):
    """A function giving a fresh datamodule over one fabricated Slakh folder and the tiny codec."""
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    return lambda: SlakhData(root, codec=str(codec), crop_seconds=1.0, segment_seconds=1.5, batch_size=2,
                             num_workers=0)


def test_export_roundtrip(tmp_path, tiny_codec):
    dm = _data_factory(tmp_path, tiny_codec)
    codec = tmp_path / "codec"

    weights, _ = _weights_after(tmp_path / "run", dm, 2, every=2)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    assert main(["export", str(ckpt), str(tmp_path / "export")]) == 0
    model, record, info = load_exported(tmp_path / "export")
    assert all(torch.equal(weights["model." + k], v) for k, v in model.state_dict().items())
    assert record.codec["cardinality"] == 64 and record.window_seconds == 1.0
    assert record.model == model.cfg and record.model.dim == 64  # the full shape, not a preset name
    assert info["global_step"] == 2 and info["training"]["preset"] == "tiny" and info["weights_averaged"] is False
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["model"]["cardinality"] == 64 and not list((tmp_path / "export").glob("*.tmp"))
    # the fitted embedded codec travels with the model, unchanged
    assert record.codec["name"] == "codec"
    bundled = EmbeddedCodec.load(tmp_path / "export" / "codec")
    assert bundled.fingerprint() == tiny_codec.fingerprint() == record.codec["fingerprint"]

    # half precision: half the bytes, weights within float16 rounding, codec rounded the same way
    assert main(["export", str(ckpt), str(tmp_path / "half"), "--half", "true"]) == 0
    half, record_h, _ = load_exported(tmp_path / "half")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(half.state_dict()[k], v, rtol=1e-3, atol=1e-4)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "half") < 0.55 * size(tmp_path / "export")
    # the fingerprint recorded at export is the one the float16 files give when loaded
    assert EmbeddedCodec.load(tmp_path / "half" / "codec").fingerprint() == record_h.codec["fingerprint"]
    assert record_h.codec["fingerprint"] != tiny_codec.fingerprint()  # rounded codebooks, other tokens
    assert load_model(tmp_path / "half", device="cpu").codec.fingerprint() == record_h.codec["fingerprint"]

    # a codec refitted after training would give other tokens: export refuses
    refit = EmbeddedCodec.load(codec)
    refit.codebooks.add_(1.0)
    refit.save(codec)
    with pytest.raises(CheckpointError, match="refitted"):
        export_checkpoint(ckpt, tmp_path / "bad")


def test_a_moving_average_of_the_weights_resumes_exactly_and_is_what_is_exported(tmp_path, tiny_codec):
    """configs/demo_finetune_ema.yaml: Lightning's EMAWeightAveraging beside stemgen's checkpoints."""
    dm = _data_factory(tmp_path, tiny_codec)
    averaged, _ = _weights_after(tmp_path / "ema", dm, 6, every=3, ema_decay=0.5)
    raw, _ = _weights_after(tmp_path / "raw", dm, 6)
    ckpt = next((tmp_path / "ema" / "ckpt").glob("*step=6.ckpt"))
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    # the average leaves the training path alone: the raw weights are the run's without it
    assert all(torch.equal(data["current_model_state"][k], raw[k]) for k in raw)
    assert all(torch.equal(data["state_dict"][k], averaged[k]) for k in raw)
    assert not torch.equal(averaged["model.heads"], raw["model.heads"])
    # resumed from step 3, the run reaches the same average and the same raw weights
    resumed, t = _weights_after(tmp_path / "resumed", dm, 6, every=3, ema_decay=0.5, rng_seed=7,
                                ckpt=str(next((tmp_path / "ema" / "ckpt").glob("*step=3.ckpt"))))
    assert t.global_step == 6 and all(torch.equal(resumed[k], averaged[k]) for k in raw)
    again = torch.load(next((tmp_path / "resumed" / "ckpt").glob("*step=6.ckpt")), map_location="cpu",
                       weights_only=True)
    assert all(torch.equal(again["current_model_state"][k], raw[k]) for k in raw)
    # the export is the average, and records that it is
    assert main(["export", str(ckpt), str(tmp_path / "export")]) == 0
    model, _, info = load_exported(tmp_path / "export")
    assert all(torch.equal(averaged["model." + k], v) for k, v in model.state_dict().items())
    assert info["weights_averaged"] is True


def test_a_shape_other_than_the_presets_trains_exports_and_loads(tmp_path, tiny_codec):
    dm = _data_factory(tmp_path, tiny_codec)

    weights, _ = _weights_after(tmp_path / "run", dm, 2, every=2, dim=48, n_layers=3, n_heads=2)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    assert main(["export", str(ckpt), str(tmp_path / "export")]) == 0
    model, record, _ = load_exported(tmp_path / "export")
    assert (model.cfg.dim, model.cfg.n_layers, model.cfg.n_heads) == (48, 3, 2) and len(model.blocks) == 3
    assert all(torch.equal(weights["model." + k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="heads times an even head size"):
        StemGenLightning("tiny", cardinality=64, dim=50, n_heads=4)  # 12.5 per head
    with pytest.raises(ValueError, match="n_layers"):
        StemGenLightning("tiny", cardinality=64, n_layers=0)


def test_codec_features_travel_with_the_export(tmp_path, tiny_codec):
    dm = _data_factory(tmp_path, tiny_codec)

    weights, _ = _weights_after(tmp_path / "run", dm, 2, every=2, codebook_dim=8)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    export_checkpoint(ckpt, tmp_path / "export")
    model, record, _ = load_exported(tmp_path / "export")
    assert record.model.codebook_dim == 8
    feats = model.codebook_features
    assert torch.equal(feats, weights["model.codebook_features"]) and feats.abs().sum() > 0
    # the features are the training codec's codebooks under the map, as set when training started
    fresh = type(model)(model.cfg).set_codebook_features(tiny_codec.codebook_vectors())
    torch.testing.assert_close(feats, fresh.codebook_features)
    stem = load_model(tmp_path / "export", device="cpu").generate(torch.randn(16000).numpy() * 0.1, "bass",
                                                                    sample_rate=16000, steps=2, seed=0)
    assert stem.audio.shape[0] > 0


def _two_step_checkpoint(tmp_path, tiny_codec):
    """A checkpoint of the tiny model after 2 training steps on a fabricated Slakh folder."""
    dm = _data_factory(tmp_path, tiny_codec)

    _weights_after(tmp_path / "run", dm, 2, every=2)
    return next((tmp_path / "run" / "ckpt").glob("*.ckpt"))


def test_export_records_the_sampling_the_model_generates_with(tmp_path, tiny_codec):
    ckpt = _two_step_checkpoint(tmp_path, tiny_codec)
    plain = load_model(ckpt, device="cpu")
    assert plain.default_settings == SamplingSettings.paper(4) and plain.record.sampling == {}
    own = {"guidance_form": "nested", "lambda_context": 2.0, "steps": [4, 2, 2, 2]}
    assert main(["export", str(ckpt), str(tmp_path / "export"), "--sampling", json.dumps(own)]) == 0
    m = load_model(tmp_path / "export", device="cpu")
    s = m.default_settings
    assert (s.guidance_form, s.lambda_context, s.lambda_instrument, s.steps) == ("nested", 2.0, 3.0, (4, 2, 2, 2))
    context = torch.randn(16000).numpy() * 0.1
    stem = m.generate(context, "bass", sample_rate=16000, seed=0)
    assert stem.settings["guidance_form"] == "nested" and stem.settings["steps"] == [4, 2, 2, 2]
    # explicit settings and short arguments still win over the model's own
    assert m.settings(SamplingSettings.naive(steps=(1, 1, 1, 1))).guidance is False
    assert m.settings(guidance=1.5).guidance_form == "nested" and m.settings(guidance=1.5).lambda_context == 1.5
    # a same-seed stem with the recorded settings passed explicitly is the same stem
    again = plain.generate(context, "bass", sample_rate=16000, seed=0, settings=s)
    assert torch.equal(again.tokens, stem.tokens)
    # a setting that does not exist or a bad value is refused at export, naming it
    with pytest.raises(ValueError, match="guidance_shape"):
        export_checkpoint(ckpt, tmp_path / "bad", sampling={"guidance_shape": "nested"})
    with pytest.raises(ValueError, match="guidance_form"):
        export_checkpoint(ckpt, tmp_path / "bad", sampling={"guidance_form": "sideways"})


def test_export_takes_its_settings_from_a_file(tmp_path, tiny_codec, capsys):
    ckpt = _two_step_checkpoint(tmp_path, tiny_codec)
    shipped = Path(__file__).resolve().parents[2] / "configs" / "gpu_export_shipped.json"
    fields = json.loads(shipped.read_text())
    # the file `make demo-model` exports with is what the shipped model records
    record = json.loads((demo_model_dir() / "config.json").read_text())
    assert (record["sampling"], record["instrument_sampling"]) == (fields["sampling"], fields["instrument_sampling"])
    assert main(["export", str(ckpt), str(tmp_path / "export"), "--settings", str(shipped)]) == 0
    m = load_model(tmp_path / "export", device="cpu")
    assert m.record.sampling == fields["sampling"] and m.record.instrument_sampling == fields["instrument_sampling"]
    assert m.default_settings.guidance_form == "nested" and m.default_settings.temperature == (0.5, 1.0, 1.0, 1.0)
    # a flag given beside the file replaces the file's value for that key only
    assert main(["export", str(ckpt), str(tmp_path / "mixed"), "--settings", str(shipped),
                 "--sampling", json.dumps({"lambda_context": 2.0})]) == 0
    m = load_model(tmp_path / "mixed", device="cpu")
    assert m.record.sampling == {"lambda_context": 2.0}
    assert m.record.instrument_sampling == fields["instrument_sampling"]
    # a missing file, bad JSON, an unknown key and a bad setting in the file are named
    capsys.readouterr()
    assert main(["export", str(ckpt), str(tmp_path / "x"), "--settings", str(tmp_path / "none.json")]) == 2
    assert "none.json: file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{sampling: 1")
    assert main(["export", str(ckpt), str(tmp_path / "x"), "--settings", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "odd.json").write_text(json.dumps({"sampling": {}, "temperature": 0.5}))
    assert main(["export", str(ckpt), str(tmp_path / "x"), "--settings", str(tmp_path / "odd.json")]) == 2
    assert "['temperature']" in capsys.readouterr().err
    (tmp_path / "wrong.json").write_text(json.dumps({"sampling": {"guidance_shape": "nested"}}))
    assert main(["export", str(ckpt), str(tmp_path / "x"), "--settings", str(tmp_path / "wrong.json")]) == 2
    assert "guidance_shape" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_records_settings_per_instrument(tmp_path, tiny_codec):
    ckpt = _two_step_checkpoint(tmp_path, tiny_codec)
    cool = {"guidance": False, "w_position": 0.0, "temperature": [0.5, 1, 1, 1], "steps": [3, 2, 2, 1]}
    assert main(["export", str(ckpt), str(tmp_path / "export"), "--sampling", json.dumps(cool),
                 "--instrument_sampling", json.dumps({"Drums": {"steps": [2, 2, 1, 1]}})]) == 0
    m = load_model(tmp_path / "export", device="cpu")
    assert m.record.instrument_sampling == {"drums": {"steps": [2, 2, 1, 1]}}  # one spelling per class
    drums, bass = m.default_settings_for("drums"), m.default_settings_for("bass")
    # an instrument's own settings start from the paper's best, not from the model's --sampling
    assert drums == SamplingSettings.paper(4).updated({"steps": [2, 2, 1, 1]}, 4)
    assert bass == m.default_settings and not bass.guidance and bass.temperature == (0.5, 1.0, 1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randn(16000, generator=g).numpy() * 0.1 for _ in range(3)]
    # one call with mixed instruments: each stem is the stem its instrument's settings give alone
    mixed = m.generate(contexts, ["bass", "drums", "bass"], sample_rate=16000, seed=5)
    assert [s.settings["guidance"] for s in mixed] == [False, True, False]
    assert mixed[1].settings["steps"] == [2, 2, 1, 1] and mixed[0].settings["steps"] == [3, 2, 2, 1]
    for j, (context, inst) in enumerate(zip(contexts, ["bass", "drums", "bass"])):
        alone = m.generate(context, inst, sample_rate=16000, seed=5 + j)
        assert torch.equal(alone.tokens, mixed[j].tokens), inst
    # explicit settings win over an instrument's own
    assert m.settings(SamplingSettings.naive(), instrument="drums").guidance is False
    # bad instruments or fields are refused at export, naming them
    with pytest.raises(ValueError, match="kazoo"):
        export_checkpoint(ckpt, tmp_path / "bad", instrument_sampling={"kazoo": {}})
    with pytest.raises(ValueError, match="drums.*guidance_shape"):
        export_checkpoint(ckpt, tmp_path / "bad", instrument_sampling={"drums": {"guidance_shape": "nested"}})


def test_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.ckpt"), str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert main(["export", str(tmp_path / "other.ckpt"), str(tmp_path / "out")]) == 2
    assert "not a stemgen-train checkpoint" in capsys.readouterr().err
    import argparse

    torch.save({"hyper_parameters": argparse.Namespace(preset="tiny")}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="weights_only"):
        export_checkpoint(tmp_path / "evil.ckpt", tmp_path / "out")
    with pytest.raises(MissingWeightsError, match="stemgen export"):
        load_exported(tmp_path / "nothing")


def test_checkpoints_and_exports_of_the_previous_format_still_load(tmp_path, tiny_codec, caplog):
    from stemgen.model import ModelConfig, StemGenModel
    from stemgen.train.export import read_checkpoint

    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=64))
    legacy_codec = {"name": "somewhere", **tiny_codec.describe(), "fingerprint": "0123456789abcdef"}
    del legacy_codec["fingerprint_scheme"]
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()}, "global_step": 7,
                "hyper_parameters": {"preset": "tiny", "num_levels": 4, "cardinality": 64},
                "stemgen_codec": legacy_codec, "stemgen_window_seconds": 2.0}, tmp_path / "old.ckpt")
    loaded, record, info = read_checkpoint(tmp_path / "old.ckpt")
    assert record.model == model.cfg and record.window_seconds == 2.0 and info["global_step"] == 7
    # an old-scheme fingerprint cannot be compared: a warning, not a refusal
    with caplog.at_level("WARNING"):
        m = load_model(tmp_path / "old.ckpt", codec=tiny_codec, device="cpu")
    assert "older scheme" in caplog.text and m.window_frames == 100


def test_sharded_export_loads_back(tmp_path, tiny_codec):
    from stemgen.model import ModelConfig, StemGenModel
    from stemgen.model.io import ModelRecord, save_exported

    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=64))
    record = ModelRecord.for_codec(model.cfg, tiny_codec, "codec", 1.0)
    save_exported(model, tmp_path / "one", record)
    save_exported(model, tmp_path / "many", record, max_shard_bytes=40_000)
    shards = sorted((tmp_path / "many").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and not (tmp_path / "many" / "model.safetensors").exists()
    biggest = max(v.numel() * v.element_size() for v in model.state_dict().values())
    assert all(p.stat().st_size <= max(40_000, biggest) + 4096 for p in shards)
    loaded, rec, _ = load_exported(tmp_path / "many")
    assert rec == record and all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    save_exported(model, tmp_path / "many", record)  # re-exported unsharded: no stale shards left
    assert not list((tmp_path / "many").glob("model-*")) and load_exported(tmp_path / "many")[0] is not None
