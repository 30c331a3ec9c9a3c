"""The embedded codec: residual k-means over log-magnitude STFT frames, Griffin-Lim decoding.

It needs no downloaded weights: ``fit_embedded_codec`` fits it on the embedded chorales in
minutes on 2 CPU cores. It keeps the paper codec's token contract (Q=4 levels of V=2048
codes, 50 Hz frames at 32 kHz) so models, data and sampling work with either codec.

Encoding: frame t of the STFT (n_fft 2048, hop 640, Hann) -> magnitude in dB re full scale
-> level above the floor, stretched by a power (loud partials weigh more in k-means) ->
multiplied by a per-bin weight (the mel scale's density, so that the codebooks spend their
precision where hearing does, not on the many high bins) -> residual vector quantization
(beam search over levels). Decoding: sum of the chosen codes -> un-weight -> clip to the
range seen in fitting -> un-stretch -> magnitudes -> fast Griffin-Lim. The design and the
measurements behind its defaults are in docs/architecture.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, MissingWeightsError
from ..paths import atomic_write
from .base import Codec
from .kmeans import residual_kmeans
from .spectral import griffin_lim, log_magnitude, magnitude_scale

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KIND = "embedded-spectral-rvq"


@dataclass
class EmbeddedCodecConfig:
    """Shape of the embedded codec. Units: Hz, samples, dB.

    ``floor_db``: levels below this (re full scale) count as silence. ``level_power``: the
    stretch p of the level above the floor. ``encode_beam``: beam width of the encoder
    (1 = greedy). ``time_smoothing``: a in the [a, 1-2a, a] filter over decoded frames (0 = off).
    """

    sample_rate: int = 32000
    hop_length: int = 640
    n_fft: int = 2048
    num_levels: int = 4
    cardinality: int = 2048
    floor_db: float = -90.0
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    time_smoothing: float = 0.0
    encode_beam: int = 4
    level_power: float = 3.0


def bin_weights(n_fft: int, sample_rate: int) -> torch.Tensor:
    """Per-bin weight ``(F,)``: the mel scale's density d(mel)/df, normalised to mean 1."""
    f = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    w = 1.0 / (700.0 + f)
    return (w / w.mean()).float()


class EmbeddedCodec(Codec):
    """Spectral RVQ codec: ``encode (B, N) -> (B, Q, T)``, ``decode (B, q, T) -> (B, T*hop)``."""

    name = "embedded"

    def __init__(self, config: EmbeddedCodecConfig | None = None, codebooks: torch.Tensor | None = None,
                 feature_max: float = 1e4):
        super().__init__()
        self.config = config = config or EmbeddedCodecConfig()
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        self.num_levels = config.num_levels
        self.cardinality = config.cardinality
        n_bins = config.n_fft // 2 + 1
        if codebooks is None:
            codebooks = torch.zeros(config.num_levels, config.cardinality, n_bins)
        if tuple(codebooks.shape) != (config.num_levels, config.cardinality, n_bins):
            raise CheckpointError(f"embedded codec codebooks have shape {tuple(codebooks.shape)}, "
                                  f"config expects {(config.num_levels, config.cardinality, n_bins)}.")
        # stored (the state dict, the fingerprint): codebooks in the weighted feature space (Q, V, F)
        self.register_buffer("codebooks", codebooks.float().contiguous())
        self.register_buffer("feature_max", torch.tensor(float(feature_max)))
        # recomputed from the config at every load: their last bits depend on the CPU's math
        # library, so they are not persistent and never part of the fingerprint
        self.register_buffer("sqrt_weight", bin_weights(config.n_fft, config.sample_rate).sqrt(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.eval()

    # -- features --------------------------------------------------------------------------
    def codebook_vectors(self) -> torch.Tensor:
        """``(Q, V, F)`` the codebooks, in the weighted log-magnitude feature space (F STFT bins)."""
        return self.codebooks

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Weighted log-magnitude frames ``(B, T, F)`` of ``(B, N)`` audio (zero-padded to T*hop)."""
        wav = self._check_audio(wav).to(self.window.device)
        t = self.num_frames(wav.shape[-1])
        wav = torch.nn.functional.pad(wav, (0, t * self.hop_length - wav.shape[-1]))
        db = log_magnitude(wav, self.config.n_fft, self.hop_length, self.window, self.config.floor_db)
        return self.level_to_feature(db - self.config.floor_db) * self.sqrt_weight

    def level_to_feature(self, level: torch.Tensor) -> torch.Tensor:
        """dB above the floor (>= 0) -> un-weighted feature: ``level**p * 60**(1-p)``.

        p = ``level_power``; p > 1 stretches loud levels so that k-means spends more of its
        precision on the partials that carry pitch; 60 dB maps to itself for every p.
        """
        p = self.config.level_power
        return level if p == 1.0 else level.clamp_min(0.0) ** p * 60.0 ** (1.0 - p)

    def feature_to_level(self, feature: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`level_to_feature` (negative features clip to the floor)."""
        p = self.config.level_power
        feature = feature.clamp_min(0.0)
        return feature if p == 1.0 else (feature * 60.0 ** (p - 1.0)) ** (1.0 / p)

    def quantize(self, feats: torch.Tensor) -> torch.Tensor:
        """Residual VQ of weighted frames ``(B, T, F)`` -> tokens ``(B, Q, T)``.

        Each frame's code sequence is chosen by a beam search over the levels, keeping the
        ``encode_beam`` best partial sums (width 1 is the plain greedy residual VQ).
        """
        b, t, f = feats.shape
        x = feats.reshape(b * t, f)
        out = torch.cat([self._beam_search(x[i : i + 2048]) for i in range(0, x.shape[0], 2048)], 1)
        return out.reshape(self.num_levels, b, t).transpose(0, 1)

    def _beam_search(self, x: torch.Tensor) -> torch.Tensor:
        """Beam-search RVQ of rows ``(N, F)`` -> codes ``(Q, N)``."""
        n, f = x.shape
        approx = x.new_zeros(n, 1, f)  # (N, K, F) partial sums of the kept beams
        paths = torch.zeros(n, 1, 0, dtype=torch.long, device=x.device)  # (N, K, q)
        for book in self.codebooks:
            residual = x[:, None] - approx  # (N, K, F)
            err = (residual * residual).sum(-1, keepdim=True) - 2 * residual @ book.T + (book * book).sum(1)
            k = min(max(1, self.config.encode_beam), err.shape[1] * err.shape[2])
            best = err.reshape(n, -1).topk(k, largest=False).indices  # (N, k), best first
            parent, code = best // book.shape[0], best % book.shape[0]
            approx = approx.gather(1, parent[..., None].expand(-1, -1, f)) + book[code]
            paths = torch.cat([paths.gather(1, parent[..., None].expand(-1, -1, paths.shape[2])),
                               code[..., None]], 2)
        return paths[:, 0].T

    def dequantize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, q, T)`` -> log-magnitude in dB ``(B, T, F)`` (un-weighted, clipped)."""
        feats = sum(self.codebooks[q][tokens[:, q]] for q in range(tokens.shape[1]))  # (B, T, F)
        feats = (feats / self.sqrt_weight).clamp(max=float(self.feature_max))
        db = self.feature_to_level(feats) + self.config.floor_db
        a = self.config.time_smoothing
        if a > 0 and db.shape[1] > 1:
            # quantization error is independent from frame to frame while music is not:
            # a short [a, 1-2a, a] filter over time averages part of the error away
            padded = torch.cat([db[:, :1], db, db[:, -1:]], 1)
            db = a * padded[:, :-2] + (1 - 2 * a) * db + a * padded[:, 2:]
        return db

    # -- codec contract --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.features(wav))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self._check_tokens(tokens).to(self.codebooks.device)
        db = self.dequantize(tokens)  # (B, T, F)
        # the floor stands for "nothing here": subtract it so that it decodes to silence
        floor = 10.0 ** (self.config.floor_db / 20.0)
        mag = (10.0 ** (db / 20.0) - floor).clamp_min(0.0) * magnitude_scale(self.window)
        mag = torch.cat([mag, mag[:, -1:]], 1).transpose(1, 2)  # (B, F, T+1): frame T closes the signal
        length = tokens.shape[-1] * self.hop_length
        return griffin_lim(mag, self.config.n_fft, self.hop_length, self.window, length,
                           self.config.griffin_lim_iters, self.config.griffin_lim_momentum)

    # -- persistence -----------------------------------------------------------------------
    def fingerprint_extra(self) -> dict:
        return asdict(self.config)

    def save(self, folder: str | Path, extra: dict | None = None, half: bool = False) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``folder`` (atomically per file).

        ``half`` stores the codebooks as float16 (half the size). Call :meth:`to_half_precision`
        first so that the codec in memory gives the same tokens as the one on disk.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        books = self.codebooks.half() if half else self.codebooks
        tensors = {"codebooks": books.contiguous(), "feature_max": self.feature_max.reshape(1)}
        extra = extra if extra is not None else getattr(self, "fit_info", None)  # keep how it was fitted
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp)))
        cfg = {"codec": KIND, **asdict(self.config), **({"fit": extra} if extra else {})}
        atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(cfg, indent=1)))
        return folder

    def to_half_precision(self) -> "EmbeddedCodec":
        """Round the codebooks to float16 values (kept as float32), as :meth:`save` with
        ``half=True`` stores them; returns ``self``."""
        self.codebooks.copy_(self.codebooks.half().float())
        return self

    @classmethod
    def load(cls, folder: str | Path) -> "EmbeddedCodec":
        """Load a codec written by :meth:`save` (safetensors; nothing is unpickled)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_NAME).exists() or not (folder / WEIGHTS_NAME).exists():
            raise MissingWeightsError(
                f"no embedded codec in {folder} (need {CONFIG_NAME} and {WEIGHTS_NAME}). Fit one "
                f"with `stemgen codec fit --out {folder}` (a few minutes on 2 cores).")
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        if cfg.pop("codec", None) != KIND:
            raise CheckpointError(f"{folder / CONFIG_NAME} does not describe an embedded codec.")
        fit_info = cfg.pop("fit", None)
        try:
            config = EmbeddedCodecConfig(**cfg)
            tensors = load_file(str(folder / WEIGHTS_NAME))
        except Exception as err:
            raise CheckpointError(f"cannot read the embedded codec in {folder}: {err}") from err
        codec = cls(config, tensors["codebooks"], float(tensors["feature_max"][0]))
        codec.fit_info = fit_info
        return codec


def _sounding_frames(codec: EmbeddedCodec, clips: list[np.ndarray], budget: int,
                     gen: torch.Generator) -> torch.Tensor:
    """Weighted feature frames ``(n, F)`` with a bin at least 20 dB above the floor: at most
    ``budget`` frames, drawn at random with every clip contributing."""
    if budget <= 0 or not clips:
        return torch.zeros(0, codec.config.n_fft // 2 + 1)
    per_clip = max(1, -(-2 * budget // len(clips)))  # bounds memory; trimmed to budget below
    threshold = codec.level_to_feature(torch.tensor(20.0))
    frames = []
    for clip in clips:
        f = codec.features(torch.from_numpy(np.asarray(clip, dtype=np.float32))[None])[0]  # (T, F)
        f = f[(f / codec.sqrt_weight).amax(1) > threshold]
        frames.append(f[torch.randperm(f.shape[0], generator=gen)[:per_clip]])
    x = torch.cat(frames)
    return x[torch.randperm(x.shape[0], generator=gen)[:budget]]


def fit_embedded_codec(clips: list[np.ndarray], config: EmbeddedCodecConfig | None = None, *,
                       mix_clips: list[np.ndarray] | None = None, mix_fraction: float = 0.4,
                       max_frames: int = 60_000, iters: int = 10, seed: int = 0,
                       progress: bool = True) -> tuple[EmbeddedCodec, dict]:
    """Fit the codebooks on mono clips at ``config.sample_rate``.

    Args:
        clips: single-instrument audio (stems), ``(N,)`` float arrays.
        mix_clips: mixes, which the codec must also encode (they are the model's context);
            they get ``mix_fraction`` of the frames, since mixes are harder to quantize.
        max_frames: frames for k-means, drawn at random among the sounding ones.
        iters: Lloyd iterations per level.

    Returns:
        The codec and a dict of fit statistics.
    """
    from tqdm.auto import tqdm

    config = config or EmbeddedCodecConfig()
    codec = EmbeddedCodec(config)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    n_mix = int(round(max_frames * mix_fraction)) if mix_clips else 0
    stems = _sounding_frames(codec, clips, max_frames - n_mix, gen)
    mixes = _sounding_frames(codec, mix_clips or [], n_mix, gen)
    x = torch.cat([stems, mixes])
    if x.shape[0] == 0:
        raise ValueError("no sounding frames to fit the embedded codec on: the audio is silent.")
    feature_max = float((x / codec.sqrt_weight).max())
    bar = tqdm(total=config.num_levels, desc="fitting codec levels", disable=not progress)
    books = residual_kmeans(x, config.num_levels, config.cardinality, iters, seed,
                            progress=lambda q: bar.update(1))
    bar.close()
    fitted = EmbeddedCodec(config, books, feature_max)
    stats = {"frames": int(x.shape[0]), "stem_frames": int(stems.shape[0]), "mix_frames": int(mixes.shape[0]),
             "clips": len(clips) + len(mix_clips or []), "iters": iters, "seed": seed,
             "seconds": round(time.perf_counter() - start, 1)}
    return fitted, stats
