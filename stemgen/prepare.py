"""Prepare the offline defaults: the embedded chorale dataset and the embedded codec.

Both are cached under :func:`stemgen.paths.home` and reused when already there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .audio import load_mono
from .codec import default_embedded_dir
from .data.chorales import default_chorales_dir
from .data.songs import song_folders

log = logging.getLogger(__name__)


def codec_fit_audio(root: Path, songs: int, sample_rate: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(stems, mixes)``: mono clips of the first ``songs`` training tracks under ``root``."""
    tracks = song_folders(root, "train", complete=True)[:songs]
    if not tracks:
        raise FileNotFoundError(f"no training tracks under {Path(root) / 'train'}: render the "
                                f"chorales first (stemgen data chorales --out {root}).")
    stems = [load_mono(f, sample_rate) for t in tracks for f in sorted((t / "stems").glob("*.flac"))]
    mixes = [load_mono(t / "mix.flac", sample_rate) for t in tracks]
    return stems, mixes


def prepare_chorales(out: Path | None = None, limit: int | None = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """Render (or reuse) the embedded chorale dataset; returns its root folder."""
    from .data.chorales import render_chorales

    out = Path(out) if out else default_chorales_dir()
    render_chorales(out, limit=limit, seed=seed, progress=progress)
    return out


def prepare_embedded_codec(data: Path | None = None, out: Path | None = None, songs: int = 40,
                           max_frames: int = 100_000, iters: int = 12, seed: int = 0,
                           force: bool = False, progress: bool = True, half: bool = False):
    """Fit the embedded codec on the training chorales (or reuse the one in ``out``).

    Returns the codec. ``data`` must hold rendered chorales (see :func:`prepare_chorales`).
    ``half`` rounds the codebooks to float16 and stores them so (half the size).
    """
    from .codec.embedded import EmbeddedCodec, EmbeddedCodecConfig, fit_embedded_codec

    out = Path(out) if out else default_embedded_dir()
    if not force and (out / "model.safetensors").exists():
        return EmbeddedCodec.load(out)
    data = Path(data) if data else default_chorales_dir()
    config = EmbeddedCodecConfig()
    stems, mixes = codec_fit_audio(data, songs, config.sample_rate)
    codec, stats = fit_embedded_codec(stems, config, mix_clips=mixes, max_frames=max_frames,
                                      iters=iters, seed=seed, progress=progress)
    stats.update(songs=min(songs, len(song_folders(data, "train", complete=True))), data=str(data))
    if half:
        codec.to_half_precision()
    codec.save(out, extra=stats, half=half)
    log.info("embedded codec fitted in %.1f s on %d frames -> %s", stats["seconds"], stats["frames"], out)
    return codec
