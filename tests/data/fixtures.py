"""A small fabricated Slakh2100-layout dataset (never real Slakh) and a user stem folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

SR = 44100


def tone(freq: float, seconds: float, amp: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_track(track: Path, stems: dict, prefix: bytes = b"", audio: dict | None = None,
                seconds: float = 3.0) -> None:
    """stems: sid -> metadata dict; audio: sid -> array (default: a tone per stem), None = no file."""
    (track / "stems").mkdir(parents=True, exist_ok=True)
    audio = audio or {}
    for k, (sid, meta) in enumerate(stems.items()):
        if not meta.get("audio_rendered", True):
            continue
        wav = audio.get(sid, tone(110.0 * (k + 1), seconds))
        if wav is not None:
            sf.write(track / "stems" / f"{sid}.flac", wav, SR)
    text = yaml.safe_dump({"UUID": track.name, "audio_dir": "stems", "stems": stems})
    (track / "metadata.yaml").write_bytes(prefix + text.encode())


def stem_meta(program: int, is_drum: bool = False, rendered: bool = True, inst_class: str = "x") -> dict:
    return {"program_num": program, "is_drum": is_drum, "audio_rendered": rendered,
            "inst_class": inst_class, "plugin_name": "test.nkm"}


def make_slakh(root: Path) -> Path:
    """train: 2 good tracks (one with a stray byte, one with a non-rendered stem and a corrupt
    FLAC), a broken YAML, a track with one usable stem; validation, test and omitted tracks."""
    write_track(root / "train" / "Track00001",
                {"S00": stem_meta(33, inst_class="Bass"), "S01": stem_meta(0, inst_class="Piano"),
                 "S02": stem_meta(0, is_drum=True, inst_class="Drums"), "S03": stem_meta(25, inst_class="Guitar")},
                prefix=b"\x00")
    write_track(root / "train" / "Track00002",
                {"S00": stem_meta(34), "S01": stem_meta(41), "S02": stem_meta(57, rendered=False),
                 "S03": stem_meta(80)}, prefix="\ufeff".encode())
    (root / "train" / "Track00002" / "stems" / "S03.flac").write_bytes(b"fLaC" + bytes(300))  # corrupt
    bad = root / "train" / "Track00003"
    bad.mkdir(parents=True)
    (bad / "metadata.yaml").write_text("stems: [unclosed\n  - : :")
    write_track(root / "train" / "Track00004", {"S00": stem_meta(0), "S01": stem_meta(1, rendered=False)})
    write_track(root / "validation" / "Track01501", {"S00": stem_meta(33), "S01": stem_meta(0)})
    write_track(root / "test" / "Track01876", {"S00": stem_meta(33), "S01": stem_meta(0)})
    write_track(root / "omitted" / "Track01502", {"S00": stem_meta(33), "S01": stem_meta(0)})
    return root


def make_stem_folder(root: Path) -> Path:
    """Two user songs with stems.yaml, one listing an unknown instrument."""
    song = root / "my_song"
    (song / "stems").mkdir(parents=True)
    for name, f in (("bass.wav", 55.0), ("keys.flac", 440.0), ("beat.wav", 220.0)):
        sf.write(song / "stems" / name, tone(f, 2.0), SR)
    (song / "stems.yaml").write_text(yaml.safe_dump(
        {"stems": {"bass.wav": "bass", "keys.flac": {"program": 4}, "beat.wav": {"instrument": "drums"}}}))
    odd = root / "odd_song"
    (odd / "stems").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        sf.write(odd / "stems" / name, tone(300.0, 1.0), SR)
    (odd / "stems.yaml").write_text(yaml.safe_dump({"a.wav": "kazoo", "b.wav": "piano"}))
    return root
