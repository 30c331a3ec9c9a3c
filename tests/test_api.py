"""The public API: stemgen.generate / load_model / Stem, on a tiny exported model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import stemgen
from stemgen.api import StemModel, load_model
from stemgen.errors import AudioError, CheckpointError, InstrumentError, MissingWeightsError
from stemgen.sampling.settings import SamplingSettings

from .conftest import SR, melody

FAST = dict(steps=(3, 2, 2, 1), seed=0)


def song(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds / 0.25)
    return melody(rng.integers(55, 80, size=n)) + melody(rng.integers(40, 55, size=n))


def test_generate_from_a_stereo_file_array_and_tensor(tmp_path, tiny_model):
    wav = song(1.0)
    stereo = np.stack([wav, 0.5 * wav], 1)  # (N, 2) as soundfile writes it
    sf.write(tmp_path / "ctx.wav", stereo, SR)
    a = stemgen.generate(tmp_path / "ctx.wav", "bass", model=tiny_model, **FAST)
    assert isinstance(a, stemgen.Stem) and a.sample_rate == SR and a.instrument == "Bass"
    assert a.audio.shape == (SR,) and a.audio.dtype == np.float32 and np.isfinite(a.audio).all()
    assert a.tokens.shape == (4, 50) and a.tokens.max() < 64 and a.tokens.min() >= 0
    assert a.settings["seed"] == 0 and a.settings["steps"] == [3, 2, 2, 1] and a.settings["lambda_context"] == 3.0
    np.testing.assert_allclose(a.context, 0.75 * wav, atol=1e-4)  # downmixed
    # the same audio as an array or tensor (channels first) gives the same tokens
    b = stemgen.generate(stereo.T, "bass", model=tiny_model, sample_rate=SR, **FAST)
    c = stemgen.generate(torch.from_numpy(0.75 * wav), "Bass", model=tiny_model, sample_rate=SR, **FAST)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)
    d = stemgen.generate(0.75 * wav, "bass", model=tiny_model, sample_rate=SR, steps=(3, 2, 2, 1), seed=1)
    assert not torch.equal(a.tokens, d.tokens)
    # other sample rates are resampled to the codec's
    e = stemgen.generate(melody([60, 64, 67, 72], sr=22050), "piano", model=tiny_model, sample_rate=22050, **FAST)
    assert abs(e.audio.shape[0] - SR) <= 4  # 22048 samples at 22.05 kHz
    # save / save_mix write what they hold
    a.save(tmp_path / "bass.wav")
    back, sr = sf.read(tmp_path / "bass.wav", dtype="float32")
    assert np.abs(a.audio).max() <= 0.99 + 1e-6 and 0 < a.settings["gain"] <= 1.0
    assert sr == SR and back.shape == (SR,) and np.abs(back - a.audio).max() < 1e-3
    mix = a.mix()
    assert np.abs(mix).max() <= 0.99 + 1e-6 and mix.shape == a.context.shape
    a.save_mix(tmp_path / "mix.wav")
    assert sf.info(str(tmp_path / "mix.wav")).frames == SR


def test_long_context_is_generated_in_windows(tiny_model):
    stem = stemgen.generate(song(2.0), "bass", model=tiny_model, sample_rate=SR, overlap_seconds=0.2, **FAST)
    capped = stemgen.generate(song(1.0), "bass", model=tiny_model, sample_rate=SR, overlap_seconds=5.0, **FAST)
    assert capped.settings["overlap_seconds"] == pytest.approx(12 / 50)  # at most half the window
    assert tiny_model.window_frames == 25
    assert stem.tokens.shape == (4, 100) and stem.audio.shape == (2 * SR,)
    assert stem.settings["window_seconds"] == 0.5 and stem.settings["overlap_seconds"] == pytest.approx(0.2)


def test_batch_of_contexts_and_samples(tiny_model):
    stems = stemgen.generate([song(1.0), song(0.5, seed=1)], ["bass", "drums"], model=tiny_model, sample_rate=SR,
                             num_samples=2, **FAST)
    assert [s.instrument for s in stems] == ["Bass", "Bass", "Drums", "Drums"]
    assert [s.audio.shape[0] for s in stems] == [SR, SR, SR // 2, SR // 2]
    assert not torch.equal(stems[0].tokens, stems[1].tokens)  # two samples, not one twice
    assert [s.settings["seed"] for s in stems] == [0, 1, 2, 3]  # each stem its own seed
    one = stemgen.generate(song(1.0), "bass", model=tiny_model, sample_rate=SR, num_samples=1, **FAST)
    assert isinstance(one, stemgen.Stem)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_stem_of_a_batch_is_the_single_call_of_its_recorded_settings(tiny_export, precision):
    model = load_model(tiny_export, device="cpu", precision=precision)
    contexts = [song(1.0), song(0.5, seed=1), song(1.0)]  # the same context twice, two lengths
    batch = model.generate(contexts, ["bass", "drums", "bass"], sample_rate=SR, num_samples=2, steps=(3, 2, 2, 1),
                           seed=10, causal_bias=0.3, temperature=0.9)
    seeds = [s.settings["seed"] for s in batch]
    assert len(set(seeds)) == 6 and not torch.equal(batch[0].tokens, batch[4].tokens)
    for stem, context in zip(batch, [c for c in contexts for _ in range(2)]):
        alone = model.generate(context, stem.instrument, sample_rate=SR, seed=stem.settings["seed"],
                               settings=SamplingSettings(**{k: (tuple(v) if isinstance(v, list) else v)
                                                            for k, v in stem.settings.items()
                                                            if k in SamplingSettings.__dataclass_fields__}))
        assert torch.equal(alone.tokens, stem.tokens)
    # sample 0 of a batch is the single call with the same seed
    assert torch.equal(model.generate(contexts[0], "bass", sample_rate=SR, steps=(3, 2, 2, 1), seed=10,
                                      causal_bias=0.3, temperature=0.9).tokens, batch[0].tokens)


def test_inpainting_and_continuation(tiny_model):
    ctx = song(1.0)
    first = stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, **FAST)
    again = stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, keep=first, regenerate=(0.2, 0.6),
                             steps=(3, 2, 2, 1), seed=5)
    assert torch.equal(again.tokens[:, :10], first.tokens[:, :10]) and torch.equal(again.tokens[:, 30:], first.tokens[:, 30:])
    assert not torch.equal(again.tokens[:, 10:30], first.tokens[:, 10:30])
    assert again.settings["regenerate"] == [0.2, 0.6]
    # continuation: a 0.5 s stem continued over a 1.5 s context
    short = stemgen.generate(ctx[: SR // 2], "bass", model=tiny_model, sample_rate=SR, **FAST)
    longer = np.concatenate([ctx[: SR // 2], song(1.0, seed=3)])
    cont = stemgen.generate(longer, "bass", model=tiny_model, sample_rate=SR, keep=short, **FAST)
    assert cont.tokens.shape == (4, 75) and torch.equal(cont.tokens[:, :25], short.tokens)
    # a kept stem given as audio is encoded with the model's codec
    from_audio = stemgen.generate(longer, "bass", model=tiny_model, sample_rate=SR, keep=short.audio, **FAST)
    assert torch.equal(from_audio.tokens[:, :25], tiny_model.codec.encode(torch.from_numpy(short.audio)[None])[0])
    with pytest.raises(ValueError, match="inside the context"):
        stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, keep=first, regenerate=(0.8, 3.0), **FAST)
    with pytest.raises(ValueError, match="needs keep"):
        stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, regenerate=(0.1, 0.2), **FAST)
    with pytest.raises(ValueError, match="no longer than the context"):
        stemgen.generate(ctx[: SR // 2], "bass", model=tiny_model, sample_rate=SR, keep=first, **FAST)


def test_short_arguments_build_the_settings(tiny_model):
    s = tiny_model.settings()
    assert s == SamplingSettings() == SamplingSettings.paper()  # the paper's best
    s = tiny_model.settings(steps=8, guidance=False, causal_bias=0.0, temperature=(1.0, 0.9, 0.8, 0.7))
    assert s.steps == (8,) * 4 and not s.guidance and s.w_position == 0.0 and s.temperature == (1.0, 0.9, 0.8, 0.7)
    s = tiny_model.settings(guidance=(2.0, 1.5))
    assert s.guidance and (s.lambda_context, s.lambda_instrument) == (2.0, 1.5)
    assert tiny_model.settings(guidance=1.0).lambda_instrument == 1.0
    assert tiny_model.settings(SamplingSettings(lambda_context=2.0), guidance=True).lambda_context == 2.0
    with pytest.raises(ValueError, match="one value per level"):
        tiny_model.settings(steps=(4, 4))
    with pytest.raises(ValueError, match="lambda_a, lambda_i"):
        tiny_model.settings(guidance=(1.0, 2.0, 3.0))
    # the silence gate: on by default, its own temperature turns it on, off only when asked
    assert tiny_model.settings().silence_gate and tiny_model.settings().silence_temperature is None
    off = tiny_model.settings(SamplingSettings(silence_gate=False))
    assert not off.silence_gate and tiny_model.settings(off, silence_gate=True).silence_gate
    g = tiny_model.settings(off, silence_temperature=0.3)
    assert g.silence_gate and g.silence_temperature == 0.3
    assert not tiny_model.settings(silence_gate=False).silence_gate
    with pytest.raises(ValueError, match="leave the gate on"):
        tiny_model.settings(silence_gate=False, silence_temperature=0.3)
    with pytest.raises(ValueError, match="silence_temperature must be > 0"):
        tiny_model.settings(silence_temperature=0.0)


@pytest.mark.parametrize("settings", [
    SamplingSettings.naive(),
    SamplingSettings.naive(steps=(3, 2, 2, 1), temperature=(0.7, 0.7, 0.5, 0.0)),
    SamplingSettings(steps=(3, 2, 2, 1), w_position=0.5, w_confidence=0.0, lambda_context=2.0, sampler="eager"),
])
def test_settings_are_honoured_unless_a_short_argument_is_given(tiny_model, settings):
    short = dict(steps=(2, 1, 1, 1)) if settings.steps == SamplingSettings().steps else {}
    stem = stemgen.generate(song(0.5), "bass", model=tiny_model, sample_rate=SR, seed=0, settings=settings, **short)
    expected = SamplingSettings(**{**settings.__dict__, **short}) if short else settings
    assert stem.settings == {**stem.settings, **expected.to_dict()}
    assert tiny_model.settings(settings) == settings
    # a short argument that is given wins
    assert tiny_model.settings(settings, causal_bias=0.25, temperature=0.5).w_position == 0.25


@pytest.mark.parametrize("bad, error, match", [
    ("nonexistent.wav", AudioError, "not found|No such|does not exist"),
    (np.zeros(0, np.float32), AudioError, "empty"),
    (np.zeros(SR, np.float32), AudioError, "silence"),
    (np.full(SR, 1e-5, np.float32), AudioError, "silent"),
    (np.array([0.1, np.nan] * (SR // 2), np.float32), AudioError, "NaN"),
    (np.full(100, 0.1, np.float32), AudioError, "too short"),
])
def test_bad_context_gives_a_clear_error(tiny_model, bad, error, match):
    with pytest.raises(error, match=match):
        stemgen.generate(bad, "bass", model=tiny_model, sample_rate=SR, **FAST)


def test_other_bad_input(tmp_path, tiny_model):
    (tmp_path / "junk.wav").write_bytes(b"this is not audio" * 100)
    with pytest.raises(AudioError, match="junk.wav"):
        stemgen.generate(tmp_path / "junk.wav", "bass", model=tiny_model, **FAST)
    with pytest.raises(InstrumentError, match="unknown instrument 'kazoo'.*bass"):
        stemgen.generate(song(), "kazoo", model=tiny_model, sample_rate=SR, **FAST)
    with pytest.raises(AudioError, match="sample_rate"):
        stemgen.generate(song(), "bass", model=tiny_model, **FAST)
    with pytest.raises(ValueError, match="2 instruments for 1 contexts"):
        stemgen.generate([song()], ["bass", "drums"], model=tiny_model, sample_rate=SR, **FAST)


def test_load_model_sources_and_errors(tmp_path, tiny_export, tiny_codec, monkeypatch):
    m = load_model(str(tiny_export), device="cpu")
    assert isinstance(m, StemModel) and load_model(m) is m and "window 0.5 s" in repr(m)
    assert m.precision in ("bf16", "fp32")  # auto: bf16 only where the CPU runs it natively
    for precision in ("fp32", "bf16"):
        stem = load_model(tiny_export, device="cpu", precision=precision).generate(song(0.5), sample_rate=SR, **FAST)
        assert stem.settings["precision"] == precision and stem.tokens.shape == (4, 25)
    with pytest.raises(ValueError, match="precision"):
        load_model(tiny_export, precision="fp8")
    # $STEMGEN_MODEL picks the default model
    monkeypatch.setenv("STEMGEN_MODEL", str(tiny_export))
    assert load_model(device="cpu").codec.fingerprint() == tiny_codec.fingerprint()
    with pytest.raises(MissingWeightsError, match="no model at"):
        load_model(tmp_path / "nothing")
    with pytest.raises(MissingWeightsError, match="hub could not provide"):
        load_model("someone/not-a-model")  # HF_HUB_OFFLINE=1 in tests: fails at once
    # model/codec mismatch: other cardinality, or same shape but other weights (refitted)
    from stemgen.codec.embedded import EmbeddedCodec, EmbeddedCodecConfig

    with pytest.raises(CheckpointError, match="Q=4 levels of V=64.*V=32"):
        load_model(tiny_export, codec=EmbeddedCodec(EmbeddedCodecConfig(cardinality=32)))
    refit = EmbeddedCodec.load(tiny_export / "codec")
    refit.codebooks.mul_(1.01)
    with pytest.raises(CheckpointError, match="refitted"):
        load_model(tiny_export, codec=refit)


def test_load_model_from_a_training_checkpoint(tmp_path, tiny_codec):
    from stemgen.data.datamodule import SlakhData

    from .data.fixtures import make_slakh
    from .train.test_module import _weights_after

    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    weights, _ = _weights_after(tmp_path / "run", lambda: SlakhData(root, codec=str(codec), crop_seconds=1.0,
                                                                    segment_seconds=1.5, batch_size=2, num_workers=0), 2, every=2)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    m = load_model(ckpt, device="cpu")
    assert m.window_frames == 50 and m.codec.fingerprint() == tiny_codec.fingerprint()
    # the matmul weights are held in bf16 where generation runs under bf16 autocast (this CPU)
    assert all(torch.equal(weights["model." + k].to(v.dtype), v) for k, v in m.model.state_dict().items())
    stem = m.generate(song(0.5), "bass", sample_rate=SR, **FAST)
    assert stem.tokens.shape == (4, 25)


def test_generate_gives_the_sampler_the_codecs_silence_codes(tiny_model, monkeypatch):
    import stemgen.api as api

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("silence"))
        return decode_windows(*args, **kwargs)

    decode_windows = api.decode_windows
    monkeypatch.setattr(api, "decode_windows", spy)
    ctx = song(1.0)
    cool = stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, temperature=0.5, **FAST)
    assert seen == [tiny_model.codec.silence_codes()] and cool.settings["silence_gate"] is True
    plain = stemgen.generate(ctx, "bass", model=tiny_model, sample_rate=SR, temperature=0.5, **FAST,
                             settings=SamplingSettings(silence_gate=False))
    assert plain.settings["silence_gate"] is False
