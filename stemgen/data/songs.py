"""Songs made of stems, read from a Slakh2100-layout folder or from a user's stem folder.

A :class:`Song` lists its usable stems (audio file + instrument class) with the song's sample
rate and length. Tracks that cannot be used (broken metadata, fewer than two usable stems,
unreadable audio) are skipped with one warning each and counted in a :class:`ScanReport`; an
empty result is an error naming the folder.

Layouts:

* Slakh2100 (and the embedded chorales): ``ROOT/SPLIT/TrackNNNNN/{mix.flac, stems/SNN.flac,
  metadata.yaml}``; the instrument comes from ``program_num`` (0-based) and ``is_drum``;
  stems with ``audio_rendered: false`` have no file and are left out; a stray byte before the
  YAML is tolerated.
* user stems: ``ROOT/[SPLIT/]SONG/stems/*.{wav,flac}`` plus ``SONG/stems.yaml`` mapping each
  file name to an instrument (a name such as ``bass``, or ``{program: 33}``,
  ``{program: 0, is_drum: true}``); see docs/data.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InstrumentError, StemgenError
from ..instruments import from_program, resolve

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav")
METADATA_FILES = ("metadata.yaml", "stems.yaml")  # Slakh layout, user stems layout


class DatasetError(StemgenError, ValueError):
    """A dataset folder with no usable songs, or a track that cannot be used."""


@dataclass(frozen=True)
class StemFile:
    """One stem: its audio file, its instrument class id and its name within the song."""

    name: str
    path: Path
    instrument: int


@dataclass(frozen=True)
class Song:
    """A song: its id, its usable stems, and its native sample rate (Hz) and length (samples)."""

    id: str
    stems: tuple[StemFile, ...]
    sample_rate: int
    num_samples: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass
class ScanReport:
    """What a scan found: usable songs, and skipped tracks with the reason for each."""

    songs: list[Song] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    stems_skipped: int = 0

    def skip(self, track: Path | str, reason: str) -> None:
        self.skipped[str(track)] = reason
        log.warning("skipping %s: %s", track, reason)


def _strip_stray_prefix(text: str) -> str:
    """Drop anything before the first line that starts like a YAML mapping key."""
    for i, ch in enumerate(text):
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            return text[i:]
    return text


def read_yaml(path: Path) -> dict:
    """A YAML mapping, tolerating stray bytes before it (seen in some Slakh metadata files)."""
    import yaml

    raw = path.read_bytes().decode("utf-8", errors="replace")
    for text in (raw, _strip_stray_prefix(raw)):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            return data
    raise DatasetError(f"{path} is not a readable YAML mapping")


def _audio_info(path: Path) -> tuple[int, int]:
    """Sample rate and length (samples) of an audio file; raises DatasetError if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types for broken files
        raise DatasetError(f"unreadable audio {path.name} ({err})") from err
    if info.frames == 0:
        raise DatasetError(f"empty audio {path.name}")
    return int(info.samplerate), int(info.frames)


def read_slakh_track(track: Path, report: ScanReport) -> Song | None:
    """A Slakh-layout track as a :class:`Song`, or ``None`` (recorded in ``report``) if unusable."""
    try:
        meta = read_yaml(track / "metadata.yaml")
        audio_dir = track / str(meta.get("audio_dir", "stems"))
        stems = []
        for sid, info in sorted((meta.get("stems") or {}).items()):
            if not isinstance(info, dict) or not info.get("audio_rendered", True):
                continue
            path = next((audio_dir / f"{sid}{s}" for s in AUDIO_SUFFIXES if (audio_dir / f"{sid}{s}").exists()), None)
            if path is None:
                report.stems_skipped += 1
                continue
            inst = from_program(int(info.get("program_num", 0)), bool(info.get("is_drum", False)))
            stems.append(StemFile(str(sid), path, inst.id))
        return _song(track, stems, report)
    except (DatasetError, InstrumentError, ValueError, TypeError, OSError) as err:
        report.skip(track, str(err))
        return None


def read_stem_folder_song(song: Path, report: ScanReport) -> Song | None:
    """A user song folder (``stems/`` + ``stems.yaml``) as a :class:`Song`, or ``None``."""
    try:
        spec = read_yaml(song / "stems.yaml")
        entries = spec.get("stems", spec)
        stems = []
        for fname, inst in sorted(entries.items()):
            path = song / "stems" / str(fname)
            if not path.exists():
                report.stems_skipped += 1
                log.warning("%s lists %s, which does not exist", song / "stems.yaml", fname)
                continue
            if isinstance(inst, dict):
                cls = (resolve(inst["instrument"]) if "instrument" in inst
                       else from_program(int(inst.get("program", 0)), bool(inst.get("is_drum", False))))
            else:
                cls = resolve(inst)
            stems.append(StemFile(Path(str(fname)).stem, path, cls.id))
        return _song(song, stems, report)
    except (DatasetError, InstrumentError, ValueError, TypeError, KeyError, OSError) as err:
        report.skip(song, str(err))
        return None


def _song(folder: Path, stems: list[StemFile], report: ScanReport) -> Song | None:
    """Keep the readable stems; a song needs two, all at one sample rate."""
    usable, infos, bad = [], [], []
    for stem in stems:
        try:
            infos.append(_audio_info(stem.path))
            usable.append(stem)
        except DatasetError as err:
            bad.append(str(err))
    report.stems_skipped += len(bad)
    if bad:
        log.warning("%s: %d stem(s) left out: %s", folder, len(bad), "; ".join(bad))
    if len(usable) < 2:
        report.skip(folder, f"fewer than 2 usable stems ({len(usable)})")
        return None
    rates = {rate for rate, _ in infos}
    if len(rates) != 1:
        report.skip(folder, f"stems have different sample rates {sorted(rates)}")
        return None
    return Song(folder.name, tuple(usable), rates.pop(), min(n for _, n in infos))


SPLITS = ("train", "validation", "test")
# Slakh2100's original split is contiguous in track number; redux moved duplicates to omitted/.
SLAKH_ORIG_RANGES = {"train": (1, 1500), "validation": (1501, 1875), "test": (1876, 2100)}


def check_variant(variant: str) -> str:
    """``variant`` if it names a Slakh split variant (``redux`` or ``orig``), else ValueError."""
    if variant not in ("redux", "orig"):
        raise ValueError(f"unknown Slakh split variant {variant!r}: 'redux' or 'orig'.")
    return variant


def song_folders(root: str | Path, split: str | None = "train", variant: str = "redux",
                 complete: bool = False) -> list[Path]:
    """Folders of a split.

    ``variant="redux"`` (and any non-Slakh dataset): the sub-folder ``root/split`` as it is
    (Slakh2100-redux's ``omitted/`` is never read). ``variant="orig"``: Slakh2100's original
    split, by track number (train 1-1500, validation 1501-1875, test 1876-2100), gathered from
    every split folder and ``omitted/``, so it works on either distribution. ``complete``: only
    folders that have their metadata file (a renderer writes it last).
    """
    folders = _split_folders(Path(root), split, check_variant(variant))
    if complete:
        folders = [p for p in folders if any((p / name).exists() for name in METADATA_FILES)]
    return folders


def _split_folders(root: Path, split: str | None, variant: str) -> list[Path]:
    if split is None:
        return sorted(p for p in root.iterdir() if p.is_dir())
    if variant == "redux":
        base = root / split
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if split not in SLAKH_ORIG_RANGES:
        raise ValueError(f"the orig split has no {split!r}: use one of {', '.join(SLAKH_ORIG_RANGES)}.")
    lo, hi = SLAKH_ORIG_RANGES[split]
    found = []
    for sub in (*SPLITS, "omitted"):
        for p in (root / sub).glob("Track*"):
            digits = p.name[5:]
            if p.is_dir() and digits.isdigit() and lo <= int(digits) <= hi:
                found.append(p)
    return sorted(found, key=lambda p: p.name)


def scan(root: str | Path, split: str | None = "train", layout: str = "auto",
         variant: str = "redux") -> ScanReport:
    """Read every song of a split.

    Args:
        root: dataset folder.
        split: ``train``, ``validation``, ``test``, or ``None`` for songs directly under root.
        layout: ``slakh`` (``metadata.yaml`` per track), ``stems`` (``stems.yaml`` per song) or
            ``auto`` (per folder, whichever file it has).
        variant: Slakh split variant, ``redux`` (folders as they are) or ``orig``
            (see :func:`song_folders`).

    Raises:
        DatasetError: the folder does not exist or holds no usable song.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: check --data.root "
                           f"(expected {root}/{{train,validation,test}}/SONG/...).")
    where = f"{root}/{split}" if split else str(root)
    report = ScanReport()
    for folder in song_folders(root, split, variant):
        has_meta, has_spec = (folder / "metadata.yaml").exists(), (folder / "stems.yaml").exists()
        if layout in ("slakh", "auto") and has_meta:
            song = read_slakh_track(folder, report)
        elif layout in ("stems", "auto") and has_spec:
            song = read_stem_folder_song(folder, report)
        else:
            continue  # not a song folder
        if song is not None:
            report.songs.append(song)
    if not report.songs:
        detail = f" ({len(report.skipped)} track(s) skipped: see the warnings)" if report.skipped else ""
        raise DatasetError(f"no usable songs in {where}{detail}: a song folder needs metadata.yaml "
                           f"(Slakh layout) or stems.yaml (user stems, see docs/data.md) and at "
                           f"least 2 readable stems.")
    if report.skipped or report.stems_skipped:
        log.warning("%s: %d songs usable, %d tracks and %d stems skipped", where, len(report.songs),
                    len(report.skipped), report.stems_skipped)
    return report


def _signature(folders: list[Path]) -> str:
    """Changes when a song folder appears, disappears or has its metadata/stems edited."""
    import hashlib

    h = hashlib.sha1()
    for f in folders:
        for name in METADATA_FILES:
            p = f / name
            if p.exists():
                h.update(f"{p}:{p.stat().st_mtime_ns}".encode())
        stems = f / "stems"
        if stems.exists():
            h.update(f"{stems}:{stems.stat().st_mtime_ns}".encode())
    return h.hexdigest()


def cached_scan(root: str | Path, split: str | None = "train", layout: str = "auto",
                variant: str = "redux", cache_dir: Path | None = None) -> ScanReport:
    """:func:`scan`, cached as JSON under ``$STEMGEN_HOME/index``: a second start over an
    unchanged dataset reads one small file instead of probing every stem."""
    import hashlib
    import json

    from ..paths import atomic_write, home

    root = Path(root).resolve()
    if not root.is_dir():
        return scan(root, split, layout, variant)  # raises the clear error
    folders = song_folders(root, split, variant)
    key = hashlib.sha1(f"{root}|{split}|{layout}|{variant}".encode()).hexdigest()[:16]
    path = (cache_dir or home() / "index") / f"{key}.json"
    signature = _signature(folders)
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("signature") == signature:
                report = ScanReport(
                    [Song(s["id"], tuple(StemFile(n, Path(p), i) for n, p, i in s["stems"]), s["sample_rate"],
                          s["num_samples"]) for s in data["songs"]],
                    dict(data["skipped"]), int(data["stems_skipped"]))
                if report.skipped or report.stems_skipped:
                    log.warning("%s/%s (cached index): %d tracks and %d stems skipped", root, split,
                                len(report.skipped), report.stems_skipped)
                return report
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable dataset index %s", path)
    report = scan(root, split, layout, variant)
    data = {"signature": signature, "root": str(root), "split": split,
            "songs": [{"id": s.id, "sample_rate": s.sample_rate, "num_samples": s.num_samples,
                       "stems": [[st.name, str(st.path), st.instrument] for st in s.stems]} for s in report.songs],
            "skipped": report.skipped, "stems_skipped": report.stems_skipped}
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data)))  # DDP ranks may write it at once
    return report
