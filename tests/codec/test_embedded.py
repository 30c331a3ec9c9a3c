"""The embedded codec: token contract, quality invariants, persistence, errors."""

import numpy as np
import pytest
import torch

from stemgen.codec import load_codec
from stemgen.codec.embedded import EmbeddedCodec, EmbeddedCodecConfig, fit_embedded_codec
from stemgen.codec.kmeans import kmeans, nearest
from stemgen.errors import AudioError, CheckpointError, MissingWeightsError, TokenError
from stemgen.eval.codec_metrics import chroma_similarity

from ..conftest import melody


def test_nearest_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(500, 8, generator=g), torch.randn(32, 8, generator=g)
    expected = torch.cdist(x, c).argmin(1)
    assert torch.equal(nearest(x, c, chunk=64), expected)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centers])
    found = kmeans(x, 3, iters=10, generator=torch.Generator().manual_seed(1))
    dist = torch.cdist(centers, found).min(1).values
    assert (dist < 0.1).all()


def test_token_contract(tiny_codec):
    wav = torch.from_numpy(melody([60, 64, 67, 72]))[None]  # 1 s
    n = wav.shape[-1] - 100  # not a multiple of the hop
    tokens = tiny_codec.encode(wav[:, :n])
    assert tokens.shape == (1, 4, tiny_codec.num_frames(n)) == (1, 4, 50)
    assert tokens.dtype == torch.int64 and 0 <= int(tokens.min()) and int(tokens.max()) < 64
    assert tiny_codec.frame_rate == 50.0
    out = tiny_codec.decode(tokens)
    assert out.shape == (1, 50 * 640) and torch.isfinite(out).all()
    batch = tiny_codec.encode(torch.cat([wav, wav.flip(-1)]))
    assert batch.shape == (2, 4, 50) and torch.equal(batch[0], tiny_codec.encode(wav)[0])


def test_each_level_reduces_the_feature_error(tiny_codec):
    wav = torch.from_numpy(melody([45, 52, 57, 61, 64, 69, 73, 76]))[None]
    feats = tiny_codec.features(wav)
    tokens = tiny_codec.quantize(feats)
    errors = []
    for q in range(1, 5):
        approx = sum(tiny_codec.codebooks[i][tokens[:, i]] for i in range(q))
        errors.append(float(((feats - approx) ** 2).mean()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_decoded_audio_keeps_the_notes(tiny_codec):
    x = melody([57, 60, 64, 69, 72, 76, 81, 84], note_seconds=0.5)
    y = tiny_codec.decode(tiny_codec.encode(torch.from_numpy(x)[None]))[0].numpy()
    assert chroma_similarity(x, y, 32000) > 0.8
    other = melody([58, 61, 65, 70, 73, 77, 82, 85], note_seconds=0.5)  # a semitone up
    assert chroma_similarity(other, y, 32000) < chroma_similarity(x, y, 32000) - 0.2


def test_fit_is_deterministic(training_clips):
    cfg = EmbeddedCodecConfig(cardinality=16, num_levels=2)
    a, _ = fit_embedded_codec(training_clips[:3], cfg, max_frames=1000, iters=2, seed=3, progress=False)
    b, _ = fit_embedded_codec(training_clips[:3], cfg, max_frames=1000, iters=2, seed=3, progress=False)
    assert torch.equal(a.codebooks, b.codebooks)


def test_save_load_roundtrip(tmp_path, tiny_codec, isolated_home):
    wav = torch.from_numpy(melody([50, 62, 74]))[None]
    tiny_codec.save(tmp_path / "c", extra={"note": "test"})
    loaded = load_codec(tmp_path / "c")
    assert isinstance(loaded, EmbeddedCodec) and loaded.cardinality == 64
    assert torch.equal(loaded.encode(wav), tiny_codec.encode(wav))
    tokens = tiny_codec.encode(wav)
    assert torch.allclose(loaded.decode(tokens), tiny_codec.decode(tokens))
    tiny_codec.save(isolated_home / "codecs" / "embedded")
    assert torch.equal(load_codec().encode(wav), tokens)


def test_default_is_the_fitted_codec_else_the_shipped_one(tmp_path, monkeypatch):
    import stemgen.codec as codec_pkg

    shipped = load_codec()  # nothing fitted in this test's STEMGEN_HOME
    assert shipped.cardinality == 2048 and shipped.fingerprint() == EmbeddedCodec.load(
        codec_pkg.shipped_embedded_dir()).fingerprint()
    monkeypatch.setattr(codec_pkg, "shipped_embedded_dir", lambda: tmp_path / "none")
    with pytest.raises(MissingWeightsError, match="stemgen codec fit"):
        load_codec()
    with pytest.raises(MissingWeightsError):
        EmbeddedCodec.load(tmp_path)


def test_corrupt_weights_are_a_clear_error(tmp_path, tiny_codec):
    tiny_codec.save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        EmbeddedCodec.load(tmp_path)


def test_bad_inputs(tiny_codec):
    with pytest.raises(AudioError, match="shorter than one codec frame"):
        tiny_codec.encode(torch.zeros(1, 639))
    with pytest.raises(AudioError, match="empty"):
        tiny_codec.encode(torch.zeros(1, 0))
    with pytest.raises(AudioError, match="NaN"):
        tiny_codec.encode(torch.full((1, 1280), float("inf")))
    with pytest.raises(AudioError, match="mono"):
        tiny_codec.encode(torch.zeros(1, 2, 1280))
    tokens = torch.zeros(1, 4, 10, dtype=torch.long)
    with pytest.raises(TokenError, match="levels"):
        tiny_codec.decode(torch.zeros(1, 5, 10, dtype=torch.long))
    with pytest.raises(TokenError, match="0..63"):
        tiny_codec.decode(tokens + 64)
    with pytest.raises(TokenError, match="integer"):
        tiny_codec.decode(tokens.float())


def test_beam_search_never_does_worse_than_greedy(tiny_codec):
    import dataclasses

    wav = torch.from_numpy(melody([45, 57, 64, 71, 76, 52, 59, 67]))[None]
    feats = tiny_codec.features(wav)
    def with_beam(width):
        return EmbeddedCodec(dataclasses.replace(tiny_codec.config, encode_beam=width), tiny_codec.codebooks,
                             float(tiny_codec.feature_max))

    greedy, beam = with_beam(1), with_beam(4)

    def total_error(codec):
        tokens = codec.quantize(feats)
        approx = sum(codec.codebooks[q][tokens[:, q]] for q in range(4))
        return ((feats - approx) ** 2).sum(-1)  # (B, T)

    greedy_err, beam_err = total_error(greedy), total_error(beam)
    assert (beam_err <= greedy_err + 1e-3).all() and beam_err.sum() < greedy_err.sum()


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0])
def test_level_transform_roundtrip(power):
    codec = EmbeddedCodec(EmbeddedCodecConfig(cardinality=4, level_power=power))
    level = torch.linspace(0, 90, 50)
    assert torch.allclose(codec.feature_to_level(codec.level_to_feature(level)), level, atol=1e-3)
    assert codec.level_to_feature(torch.tensor(60.0)) == pytest.approx(60.0)


def test_fit_balances_stems_and_mixes(training_clips):
    cfg = EmbeddedCodecConfig(cardinality=16, num_levels=1)
    _, stats = fit_embedded_codec(training_clips[:6], cfg, mix_clips=training_clips[6:], mix_fraction=0.25,
                                  max_frames=400, iters=1, progress=False)
    assert stats["mix_frames"] == 100 and stats["stem_frames"] == 300 and stats["frames"] == 400
    with pytest.raises(ValueError, match="silent"):
        fit_embedded_codec([np.zeros(32000, dtype=np.float32)], cfg, progress=False)


def test_greedy_encoding_is_the_nearest_code_per_level(tiny_codec):
    import dataclasses

    greedy = EmbeddedCodec(dataclasses.replace(tiny_codec.config, encode_beam=1), tiny_codec.codebooks,
                           float(tiny_codec.feature_max))
    feats = greedy.features(torch.from_numpy(melody([48, 55, 64, 67]))[None])
    residual = feats[0].clone()
    expected = []
    for book in greedy.codebooks:
        idx = torch.cdist(residual, book).argmin(1)
        residual -= book[idx]
        expected.append(idx)
    assert torch.equal(greedy.quantize(feats)[0], torch.stack(expected))


def test_time_smoothing_filters_decoded_levels(tiny_codec):
    import dataclasses

    smooth = EmbeddedCodec(dataclasses.replace(tiny_codec.config, time_smoothing=0.25), tiny_codec.codebooks,
                           float(tiny_codec.feature_max))
    tokens = tiny_codec.encode(torch.from_numpy(melody([48, 60, 72]))[None])
    raw, out = tiny_codec.dequantize(tokens), smooth.dequantize(tokens)
    assert torch.allclose(out[:, 1:-1], 0.25 * raw[:, :-2] + 0.5 * raw[:, 1:-1] + 0.25 * raw[:, 2:], atol=1e-4)


def _next_float(t: torch.Tensor) -> torch.Tensor:
    """Every element moved by one unit in the last place, as another CPU's math might give it."""
    return torch.nextafter(t, torch.full_like(t, float("inf")))


def test_fingerprint_depends_only_on_what_is_stored(tiny_codec, tmp_path):
    reference = tiny_codec.fingerprint()
    codec = EmbeddedCodec.load(tiny_codec.save(tmp_path / "codec"))
    assert codec.fingerprint() == reference
    # the state dict (what the fingerprint hashes) is exactly what the files hold
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "codec" / "model.safetensors"))
    assert set(codec.state_dict()) == set(stored) == {"codebooks", "feature_max"}
    # buffers recomputed at load may differ in their last bits on another machine: no effect
    codec.window.copy_(_next_float(codec.window))
    codec.sqrt_weight.copy_(_next_float(codec.sqrt_weight))
    assert codec.fingerprint() == reference
    # a stored value that changes the tokens changes it
    codec.codebooks[1, 3, 7] = _next_float(codec.codebooks[1, 3, 7])
    assert codec.fingerprint() != reference


def test_fingerprint_of_a_float16_codec_is_the_one_recorded_at_export(tiny_codec, tmp_path):
    import copy

    half = copy.deepcopy(tiny_codec).to_half_precision()
    assert half.fingerprint() != tiny_codec.fingerprint()  # float16 rounding changes the codebooks
    loaded = EmbeddedCodec.load(half.save(tmp_path / "half", half=True))
    assert loaded.codebooks.dtype == torch.float32
    assert loaded.fingerprint() == half.fingerprint()
    assert loaded.describe()["fingerprint_scheme"] == 2


def test_silence_codes_are_what_silence_encodes_to(tiny_codec):
    codes = tiny_codec.silence_codes()
    assert len(codes) == tiny_codec.num_levels and all(0 <= c < tiny_codec.cardinality for c in codes)
    tokens = tiny_codec.encode(torch.zeros(1, 3 * tiny_codec.sample_rate))[0]  # (Q, T)
    inner = tokens[:, 2:-2]  # edge frames aside
    assert all((inner[q] == codes[q]).all() for q in range(tiny_codec.num_levels))
    # a tone is not silence: its level-0 codes are other codes
    t = torch.arange(tiny_codec.sample_rate) / tiny_codec.sample_rate
    tone = tiny_codec.encode((0.3 * torch.sin(2 * torch.pi * 220 * t))[None])[0, 0, 2:-2]
    assert (tone != codes[0]).all()
    assert tiny_codec.silence_codes() is codes  # computed once
