"""Fréchet Audio Distance (Kilgour et al.): Fréchet distance of Gaussians fitted to embeddings.

Two embedders:

* :class:`VGGish` — the standard FAD embedder (16 kHz mono, 0.96 s log-mel patches, 128-d).
  Its weights (the torchvggish port of Google's model, ``vggish-10086976.pth``) are read from
  a local file, ``$STEMGEN_HOME/weights/vggish/``, or downloaded when online; only
  ``torch.load(weights_only=True)``. Reported as ``fad_vggish``.
* :class:`LogMelStats` — needs no weights: per 0.96 s patch the mean and standard deviation of
  the same 64-band log-mel spectrogram (128-d). A weaker embedding, always reported under its
  own name, ``fd_logmel``, never as FAD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from ..errors import CheckpointError, MissingWeightsError
from ..spectra import hz_to_mel
from .distances import frechet_distance

SAMPLE_RATE = 16000
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
VGGISH_FILE = "vggish-10086976.pth"


def vggish_log_mel(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """VGGish's input features: ``(N,)`` audio -> log mel ``(T, 64)`` at 100 frames/s.

    25 ms periodic-Hann frames every 10 ms (no padding), 512-point magnitude spectrum, 64 HTK-mel
    bands from 125 to 7500 Hz (DC bin excluded), ``log(mel + 0.01)``; as Google's reference.
    """
    from ..audio import resample

    x = resample(np.asarray(wav, dtype=np.float32), int(sample_rate), SAMPLE_RATE).astype(np.float64)
    win, hop, n_fft = 400, 160, 512
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n = 1 + (len(x) - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, n_fft))  # (T, 257)
    bins_mel = hz_to_mel(np.linspace(0, SAMPLE_RATE / 2, n_fft // 2 + 1))
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 64 + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0] = 0.0
    return np.log(mag @ weights + 0.01)


def patches(log_mel: np.ndarray, frames: int = 96) -> np.ndarray:
    """Non-overlapping 0.96 s patches ``(P, 96, 64)`` (at least one; a short clip is zero-padded
    in the log domain's floor)."""
    if len(log_mel) < frames:
        log_mel = np.concatenate([log_mel, np.full((frames - len(log_mel), log_mel.shape[1]), np.log(0.01))])
    p = len(log_mel) // frames
    return log_mel[: p * frames].reshape(p, frames, log_mel.shape[1])


class LogMelStats:
    """Weight-free embedding: mean and std over each 0.96 s patch of the VGGish log mel (128-d)."""

    name = "fd_logmel"
    dim = 128

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        p = patches(vggish_log_mel(wav, sample_rate))
        return np.concatenate([p.mean(1), p.std(1)], 1).astype(np.float32)  # (P, 128)


class VGGishNet(nn.Module):
    """The VGGish network (torchvggish layout): 4 conv blocks, 3 fully connected layers.

    ``widths``/``hidden`` default to the real model; smaller values build test-sized networks
    with the same structure and key names.
    """

    def __init__(self, widths=(64, 128, 256, 256, 512, 512), hidden: int = 4096, embedding: int = 128):
        super().__init__()
        layers, c_in = [], 1
        for v in (widths[0], "M", widths[1], "M", widths[2], widths[3], "M", widths[4], widths[5], "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(c_in * 6 * 4, hidden), nn.ReLU(True), nn.Linear(hidden, hidden),
                                        nn.ReLU(True), nn.Linear(hidden, embedding), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(P, 1, 96, 64)`` log-mel patches -> ``(P, 128)``."""
        x = self.features(x)  # (P, C, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's channels-last flattening order
        return self.embeddings(x)


class VGGish:
    """VGGish embeddings (raw 128-d, before Google's PCA/quantisation) of mono audio."""

    name = "fad_vggish"
    dim = 128

    def __init__(self, weights: str | Path | None = None, net: VGGishNet | None = None, device: str = "cpu"):
        self.net = (net or VGGishNet()).eval().to(device)
        self.device = device
        state = load_vggish_state(weights)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"the VGGish weights do not fit the network: {err}") from err

    @torch.no_grad()
    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        p = torch.from_numpy(patches(vggish_log_mel(wav, sample_rate))).float()[:, None].to(self.device)
        return self.net(p).cpu().numpy()


def load_vggish_state(weights: str | Path | None = None) -> dict:
    """The VGGish state dict from ``weights``, the local weights folder, or the internet."""
    from ..paths import home

    candidates = [Path(weights).expanduser()] if weights else [home() / "weights" / "vggish" / VGGISH_FILE]
    for path in candidates:
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise CheckpointError(f"cannot read VGGish weights {path} with weights_only=True: {err}") from err
            if not isinstance(state, dict) or not any(k.startswith("features.") for k in state):
                raise CheckpointError(f"{path} is not a VGGish state dict (no 'features.*' tensors).")
            return state
    if weights:
        raise MissingWeightsError(f"VGGish weights {weights} not found.")
    try:
        return torch.hub.load_state_dict_from_url(VGGISH_URL, map_location="cpu", progress=False, weights_only=True)
    except Exception as err:
        raise MissingWeightsError(
            f"VGGish weights are not on this machine and could not be downloaded ({type(err).__name__}). "
            f"Put {VGGISH_FILE} (from {VGGISH_URL}) into {candidates[0].parent}, or use the weight-free "
            f"embedding (LogMelStats, reported as fd_logmel).") from err


class FrechetAudioDistance(Metric):
    """FAD as a torchmetrics ``Metric``: ``update(clips, real=...)`` with mono clips and their
    sample rate, ``compute()`` -> the Fréchet distance of the two Gaussian fits.

    Sums, outer-product sums and counts are the state (summed across processes), as in
    torchmetrics' FID. The embedder decides the name: ``fad_vggish`` or ``fd_logmel``.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, embedder=None, **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder or LogMelStats()
        d = self.embedder.dim
        for side in ("real", "generated"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, clips, sample_rate: int, real: bool) -> None:
        side = "real" if real else "generated"
        for clip in clips:
            e = torch.from_numpy(np.asarray(self.embedder(np.asarray(clip, np.float32), sample_rate), np.float64))
            e = e.to(self.device)
            setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + e.sum(0))
            setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + e.T @ e)
            setattr(self, f"{side}_n", getattr(self, f"{side}_n") + e.shape[0])

    def _fit(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        n = int(getattr(self, f"{side}_n"))
        if n < 2:
            raise ValueError(f"the {side} population has {n} embedding frames; FAD needs at least 2.")
        s, outer = getattr(self, f"{side}_sum").cpu().numpy(), getattr(self, f"{side}_outer").cpu().numpy()
        mu = s / n
        return mu, (outer - n * np.outer(mu, mu)) / (n - 1)

    def compute(self) -> torch.Tensor:
        return torch.tensor(frechet_distance(*self._fit("real"), *self._fit("generated")))
