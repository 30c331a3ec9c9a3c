"""FAD: VGGish features and weight loading (fabricated checkpoints), the weight-free embedding,
and the Metric against the closed-form Fréchet distance."""

import numpy as np
import pytest
import torch

from stemgen.errors import CheckpointError, MissingWeightsError
from stemgen.eval.distances import frechet_distance, gaussian_fit
from stemgen.eval.fad import (FrechetAudioDistance, LogMelStats, VGGish, VGGishNet, patches, vggish_log_mel)

SMALL = dict(widths=(2, 2, 4, 4, 8, 8), hidden=16)


def sine(freq, seconds=2.0, sr=16000):
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_vggish_features_follow_the_reference_framing():
    lm = vggish_log_mel(sine(1000.0, 1.0), 16000)
    assert lm.shape == (98, 64)  # 1 + (16000 - 400) // 160 frames, 64 bands
    peak_band = int(lm.mean(0).argmax())
    edges = 700 * (np.exp(np.linspace(1127 * np.log(1 + 125 / 700), 1127 * np.log(1 + 7500 / 700), 66) / 1127) - 1)
    assert edges[peak_band] < 1000 < edges[peak_band + 2]  # the band around 1 kHz
    assert vggish_log_mel(sine(1000.0, 1.0, 32000), 32000).shape == (98, 64)  # resampled to 16 kHz
    assert patches(lm).shape == (1, 96, 64) and patches(lm[:10]).shape == (1, 96, 64)


def test_real_vggish_layout():
    with torch.device("meta"):
        net = VGGishNet()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["features.0.weight"] == (64, 1, 3, 3) and shapes["features.13.weight"] == (512, 512, 3, 3)
    assert shapes["embeddings.0.weight"] == (4096, 512 * 4 * 6) and shapes["embeddings.4.weight"] == (128, 4096)
    assert sorted(shapes) == sorted([f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")]
                                    + [f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")])
    assert abs(sum(v.numel() for v in net.parameters()) - 72_141_184) < 1000


def test_vggish_loads_a_fabricated_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    source = VGGishNet(**SMALL)
    torch.save(source.state_dict(), tmp_path / "vggish.pth")
    emb = VGGish(tmp_path / "vggish.pth", net=VGGishNet(**SMALL))
    out = emb(sine(440.0, 3.0), 16000)
    assert out.shape == (3, 128) and (out >= 0).all()
    p = torch.from_numpy(patches(vggish_log_mel(sine(440.0, 3.0), 16000))).float()[:, None]
    np.testing.assert_allclose(out, source(p).detach().numpy(), rtol=1e-5, atol=1e-6)
    # the default location under $STEMGEN_HOME is found too
    from stemgen.paths import home

    (home() / "weights" / "vggish").mkdir(parents=True)
    torch.save(source.state_dict(), home() / "weights" / "vggish" / "vggish-10086976.pth")
    VGGish(net=VGGishNet(**SMALL))
    # wrong shapes, pickles and missing files are clear errors
    with pytest.raises(CheckpointError, match="do not fit"):
        VGGish(tmp_path / "vggish.pth", net=VGGishNet(widths=(4, 2, 4, 4, 8, 8), hidden=16))
    import argparse

    torch.save({"features.0.weight": argparse.Namespace()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        VGGish(tmp_path / "evil.pth", net=VGGishNet(**SMALL))
    with pytest.raises(MissingWeightsError, match="not found"):
        VGGish(tmp_path / "none.pth")


def test_missing_vggish_offline_points_to_the_weight_free_embedding(monkeypatch):
    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(MissingWeightsError, match="fd_logmel"):
        VGGish(net=VGGishNet(**SMALL))


class Gaussian:
    """A fake embedder: each clip's samples are its embedding frames (clips are (N, 2) arrays)."""

    name, dim = "test", 2

    def __call__(self, clip, sample_rate):
        return np.asarray(clip, np.float64).reshape(-1, 2)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_matches_the_closed_form():
    rng = np.random.default_rng(0)
    real = [rng.normal(0.0, 1.0, size=(500, 2)) for _ in range(4)]
    gen = [rng.normal(1.0, 2.0, size=(500, 2)) for _ in range(4)]
    metric = FrechetAudioDistance(Gaussian())
    metric.update(real[:2], 16000, real=True)
    metric.update(real[2:], 16000, real=True)
    metric.update(gen, 16000, real=False)
    expected = frechet_distance(*gaussian_fit(np.concatenate(real)), *gaussian_fit(np.concatenate(gen)))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(2 * (1 + 1), rel=0.15)  # analytic: |mu|^2 + sum (s1 - s2)^2
    metric.reset()
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute()


def test_weight_free_embedding_separates_different_audio():
    emb = LogMelStats()
    assert emb(sine(440.0, 2.0), 16000).shape == (2, 128)
    rng = np.random.default_rng(0)
    tones = [sine(f, 2.0) for f in rng.uniform(200, 800, size=6)]
    noise = [(0.1 * rng.normal(size=32000)).astype(np.float32) for _ in range(6)]

    def fd(a, b):
        m = FrechetAudioDistance(emb)
        m.update(a, 16000, real=True)
        m.update(b, 16000, real=False)
        return m.compute().item()

    assert fd(tones[:3], noise[:3]) > 10 * fd(tones[:3], tones[3:])
