"""LightningDataModules that serve batches of training pairs as audio and codec tokens.

* :class:`SlakhData` - a local Slakh2100 copy (``redux`` or ``orig`` split);
* :class:`ChoralesData` - the embedded Bach chorales (rendered on first use);
* :class:`StemsData` - a folder of the user's own stems (``SONG/stems/`` + ``stems.yaml``);
* :class:`TokensData` - tokens computed beforehand (:meth:`PairDataModule.export_tokens`,
  ``stemgen data tokens``): training with no audio and no codec work (a GPU machine).

Batches are dicts: ``context``/``target`` audio ``(B, L)`` at the codec rate, ``instrument``
``(B,)``, and, after the transfer to the training device, ``context_tokens``/
``target_tokens`` ``(B, Q, T)``. Training tokens are computed on the fly by the frozen codec on
the training device (crops and submixes are random, so their tokens cannot be precomputed);
validation and test use fixed pairs whose tokens are computed once and cached on disk
(``cache_eval_tokens``); ``train_token_epochs`` caches training draws the same way (for CPU
training). ``benchmarks/data_throughput.py`` measures both paths.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..instruments import resolve
from ..paths import atomic_write, home
from ..spectra import chroma_codes
from .dataset import EpochSampler, PairDataset, ResumableLoader
from .songs import DatasetError, Song, cached_scan, check_variant, song_folders

try:  # lightning is a dependency, but keep `import stemgen.data` light
    from lightning import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object

log = logging.getLogger(__name__)

#: the description file of a folder of exported tokens
TOKENS_META = "tokens.json"


class TokenCache(torch.utils.data.Dataset):
    """Fixed examples with their codec tokens, computed once and stored as safetensors.

    Holds examples ``0 .. num_examples-1`` of ``pairs`` (``num_examples`` may exceed
    ``len(pairs)``: index ``i`` is then another draw from segment ``i mod len(pairs)``).
    """

    def __init__(self, pairs: PairDataset, codec, path: Path, num_examples: int | None = None,
                 batch_size: int = 8, progress: bool = True):
        from safetensors.torch import load_file, save_file
        from tqdm.auto import tqdm

        n = len(pairs) if num_examples is None else num_examples
        if not path.exists():
            ctx, tgt, inst, song, chroma = [], [], [], [], []
            with torch.no_grad():
                for start in tqdm(range(0, n, batch_size), desc=f"caching tokens ({n} examples)",
                                  disable=not progress):
                    items = [pairs[i] for i in range(start, min(start + batch_size, n))]
                    audio = torch.stack([it["context"] for it in items])  # (b, N)
                    ctx.append(codec.encode(audio))
                    chroma.append(context_chroma(audio, codec, ctx[-1].shape[-1]))
                    tgt.append(codec.encode(torch.stack([it["target"] for it in items])))
                    inst.append(torch.stack([it["instrument"] for it in items]))
                    song.append(torch.stack([it["song_index"] for it in items]))
            tensors = {"context_tokens": torch.cat(ctx).to(torch.int16), "target_tokens": torch.cat(tgt).to(torch.int16),
                       "instrument": torch.cat(inst), "song_index": torch.cat(song),
                       "context_chroma": torch.cat(chroma).to(torch.int32)}
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))  # DDP ranks may build it at once
        data = load_file(str(path))
        self.context = data["context_tokens"].long()
        self.target = data["target_tokens"].long()
        self.instrument = data["instrument"]
        self.song_index = data["song_index"]
        self.chroma = data["context_chroma"].long() if "context_chroma" in data else None  # older caches: none

    def __len__(self) -> int:
        return len(self.instrument)

    def __getitem__(self, i: int) -> dict:
        item = {"context_tokens": self.context[i], "target_tokens": self.target[i], "instrument": self.instrument[i],
                "song_index": self.song_index[i]}
        if self.chroma is not None:
            item["context_chroma"] = self.chroma[i]
        return item


def context_chroma(audio: torch.Tensor, codec, frames: int) -> torch.Tensor:
    """Mono contexts ``(B, N)`` at the codec's rate -> the codes of their pitch-class profiles
    ``(B, frames)`` int64, one per codec frame (:func:`stemgen.spectra.chroma_codes`)."""
    rows = [chroma_codes(x.float().cpu().numpy(), codec.sample_rate, codec.hop_length, frames) for x in audio]
    return torch.from_numpy(np.stack(rows)).to(audio.device)


class StemgenData(LightningDataModule):
    """What ``stemgen-train --data`` accepts: a data module with the codec its tokens come from
    (``codec``, loaded as ``codec_name``), the training window ``crop_seconds``, and batches of
    ``context_tokens``/``target_tokens`` ``(B, Q, T)``, ``instrument`` and ``song_index`` ``(B,)``."""


class PairDataModule(StemgenData):
    """Shared machinery; subclasses say where the songs come from (:meth:`songs`).

    Args:
        root: dataset folder.
        codec: codec name or path (see :func:`stemgen.codec.load_codec`).
        crop_seconds: example length in seconds (the paper: 20).
        segment_seconds: songs are cut into segments of this length (the paper: 60).
        silence_db: pairs whose context or target RMS is below this (dBFS) are redrawn.
        batch_size: examples per batch (the paper: 40).
        num_workers: DataLoader worker processes.
        seed: seed of crops, submixes and shuffling.
        tokens: add ``context_tokens``/``target_tokens`` to each batch (False: audio only).
        cache_eval_tokens: cache validation/test tokens on disk (fixed pairs).
        train_token_epochs: 0 (default): training tokens are computed on the fly from fresh
            random pairs. N > 0: N draws per segment are encoded once and cached on disk, and
            training reads them (fast on CPU, where encoding dominates; less variety).
        harmonic_context: training pairs with a pitched target never get a drums-only context
            (validation and test keep the paper's distribution).
        full_context: probability that a training pair's context is every other stem of the song
            instead of a random subset (validation and test keep the paper's distribution).
        min_target_active: the least fraction of a training crop in which the target sounds (0: only
            a silent target is redrawn, as in the paper; validation and test keep that).
        pitched_context: probability that a training pair with a pitched target leaves the drums out
            of its context (a mix without a kit; validation and test keep the paper's distribution).
    """

    layout = "auto"
    variant = "redux"

    def __init__(self, root: str | Path | None = None, codec: str = "embedded", crop_seconds: float = 20.0,
                 segment_seconds: float = 60.0, silence_db: float = -50.0, batch_size: int = 8,
                 num_workers: int = 2, seed: int = 0, tokens: bool = True, cache_eval_tokens: bool = True,
                 train_token_epochs: int = 0, harmonic_context: bool = False, full_context: float = 0.0,
                 min_target_active: float = 0.0, pitched_context: float = 0.0):
        super().__init__()
        self.root = Path(root).expanduser() if root is not None else None
        self.codec_name = codec
        self.crop_seconds = crop_seconds
        self.segment_seconds = segment_seconds
        self.silence_db = silence_db
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokens = tokens
        self.cache_eval_tokens = cache_eval_tokens
        self.train_token_epochs = train_token_epochs
        self.harmonic_context = harmonic_context
        self.full_context = full_context
        self.min_target_active = min_target_active
        self.pitched_context = pitched_context
        self._codec = None
        self.datasets: dict[str, torch.utils.data.Dataset] = {}
        self.skipped: dict[str, int] = {}

    # -- where songs come from -------------------------------------------------------------
    def songs(self, split: str) -> list[Song]:
        """Usable songs of a split (skipped tracks are counted in :attr:`skipped`)."""
        if self.root is None:
            raise DatasetError(f"{type(self).__name__} needs a dataset folder: pass --data.root PATH.")
        report = cached_scan(self.root, split, self.layout, self.variant)
        self.skipped[split] = len(report.skipped) + report.stems_skipped
        return report.songs

    @property
    def codec(self):
        """The frozen codec (loaded on first use)."""
        if self._codec is None:
            from ..codec import load_codec

            self._codec = load_codec(self.codec_name)
        return self._codec

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",),
                  "predict": ("test",)}.get(stage, ("train", "validation", "test"))
        for split in splits:
            if split in self.datasets:
                continue
            pairs = self._pairs(split)
            if split == "train" and self.tokens and self.train_token_epochs > 0:
                n = self.train_token_epochs * len(pairs)
                self.datasets[split] = TokenCache(pairs, self.codec, self._cache_path(split, pairs, n), n)
            elif split != "train" and self.tokens and self.cache_eval_tokens:
                self.datasets[split] = TokenCache(pairs, self.codec, self._cache_path(split, pairs, len(pairs)))
            else:
                self.datasets[split] = pairs
        if self.skipped:
            log.info("skipped tracks/stems per split: %s", self.skipped)

    def _cache_path(self, split: str, pairs: PairDataset, n: int) -> Path:
        key = json.dumps({"format": 2, "root": str(self.root), "split": split, "songs": [s.id for s in pairs.songs],
                          "codec": self.codec.describe(), "crop": self.crop_seconds, "segment": self.segment_seconds,
                          "silence": self.silence_db, "seed": pairs.seed, "n": n,
                          "harmonic": pairs.harmonic_context,
                          **({"full_context": pairs.full_context} if pairs.full_context else {}),
                          **({"min_target_active": pairs.min_target_active} if pairs.min_target_active else {}),
                          **({"pitched_context": pairs.pitched_context} if pairs.pitched_context else {})},
                         sort_keys=True)
        return home() / "tokens" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.safetensors"

    def _pairs(self, split: str) -> PairDataset:
        # validation and test keep the paper's pair distribution, whatever training draws
        return PairDataset(self.songs(split), self.codec.sample_rate, self.crop_seconds, self.segment_seconds,
                           self.silence_db, seed=self.seed + {"train": 0}.get(split, 1),
                           harmonic_context=self.harmonic_context and split == "train",
                           full_context=self.full_context if split == "train" else 0.0,
                           min_target_active=self.min_target_active if split == "train" else 0.0,
                           pitched_context=self.pitched_context if split == "train" else 0.0)

    def export_tokens(self, out: str | Path, draws: int = 8, splits: tuple[str, ...] = ("train", "validation"),
                      progress: bool = True) -> Path:
        """Write the tokens of ``draws`` pairs per segment of each split (``crop_seconds`` each;
        validation: one per segment) into ``out/{split}.safetensors``, with ``out/tokens.json``
        naming the codec, for :class:`TokensData`; a split without songs is left out. Returns ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        counts = {}
        for split in splits:
            if split != "train" and not song_folders(self.root, split, self.variant):
                continue  # e.g. a folder of augmented training versions only: nothing held out
            pairs = self._pairs(split)
            n = draws * len(pairs) if split == "train" else len(pairs)
            (out / f"{split}.safetensors").unlink(missing_ok=True)
            counts[split] = len(TokenCache(pairs, self.codec, out / f"{split}.safetensors", n, progress=progress))
        meta = {"codec": {"name": str(self.codec_name), **self.codec.describe()}, "crop_seconds": self.crop_seconds,
                "draws_per_segment": draws, "examples": counts, "harmonic_context": self.harmonic_context,
                "full_context": self.full_context, "min_target_active": self.min_target_active,
                "pitched_context": self.pitched_context, "root": str(self.root), "seed": self.seed}
        atomic_write(out / TOKENS_META, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
        return out

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        if split not in self.datasets:
            self.setup(None)
        ds = self.datasets[split]
        if isinstance(ds, PairDataset):
            return epoch_loader(self, ds, shuffle, self.num_workers)
        # cached tokens: in memory already, no workers needed
        gen = torch.Generator().manual_seed(self.seed)
        sampler = torch.utils.data.RandomSampler(ds, generator=gen) if shuffle else None
        return torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Encode audio to tokens with the frozen codec, on the device the batch is on."""
        if self.tokens and "context_tokens" not in batch:
            codec = self.codec.to(batch["context"].device)
            batch["context_tokens"] = codec.encode(batch["context"])
            batch["target_tokens"] = codec.encode(batch["target"])
            if self._reads_chroma():
                batch["context_chroma"] = context_chroma(batch["context"], codec, batch["context_tokens"].shape[-1])
        return batch

    def _reads_chroma(self) -> bool:
        """Whether the module being trained reads the contexts' chroma codes (its ``reads_context_chroma``):
        they cost ~20 ms of CPU per 4 s example in the main process, spent only where they are read.
        Without a trainer (or a module that does not say) they are computed."""
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        return bool(getattr(module, "reads_context_chroma", True))


def epoch_loader(dm, ds, shuffle: bool, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A loader over ``ds`` whose item ``epoch * n + i`` is a fresh draw of example ``i``
    (:class:`EpochSampler`, rank-sharded under DDP); in training a :class:`ResumableLoader`, so
    a run resumed mid-epoch sees the batches the uninterrupted one would have seen. ``dm`` is the
    data module (its ``batch_size``, ``seed`` and trainer)."""
    trainer = getattr(dm, "trainer", None)
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def batches_done() -> int:  # training batches finished in the current epoch
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0

    loader = ResumableLoader if shuffle else torch.utils.data.DataLoader
    extra = {"progress": batches_done} if shuffle else {}
    return loader(ds, batch_size=dm.batch_size, drop_last=shuffle,
                  sampler=EpochSampler(len(ds), shuffle=shuffle, seed=dm.seed, num_replicas=world, rank=rank),
                  num_workers=num_workers, persistent_workers=num_workers > 0, **extra)


class SlakhData(PairDataModule):
    """Slakh2100 from a local copy: ``--data.root`` holds ``train/ validation/ test/`` (and, in
    the redux distribution, ``omitted/``).

    Args:
        variant: ``redux`` (1289/270/151 tracks; omitted/ is never read) or ``orig``
            (1500/375/225, by track number).
    """

    layout = "slakh"

    def __init__(self, root: str | Path | None = None, variant: str = "redux", **kwargs):
        super().__init__(root, **kwargs)
        self.variant = check_variant(variant)


class StemsData(PairDataModule):
    """A folder of your own songs: ``ROOT/{train,validation,test}/SONG/stems/*.{wav,flac}`` with
    ``SONG/stems.yaml`` naming each stem's instrument (see docs/data.md)."""

    layout = "stems"


class ChoralesData(PairDataModule):
    """The embedded Bach chorales (Slakh layout); rendered by :meth:`prepare_data` if absent.

    Args:
        limit: chorales to render when the folder is empty (None: all 353).
        render_seed: the dataset's seed (split, programs, tempi), independent of the training seed.
    """

    layout = "slakh"

    def __init__(self, root: str | Path | None = None, limit: int | None = None, render_seed: int = 0, **kwargs):
        from .chorales import default_chorales_dir

        super().__init__(root or default_chorales_dir(), **kwargs)
        self.limit = limit
        self.render_seed = render_seed

    def prepare_data(self) -> None:
        if not any((self.root / "train").glob("*/metadata.yaml")):
            from .chorales import render_chorales

            render_chorales(self.root, limit=self.limit, seed=self.render_seed)


class TokensData(StemgenData):
    """Training from tokens computed beforehand: no audio, no codec work, no audio packages.

    ``root`` holds what :meth:`PairDataModule.export_tokens` (``stemgen data tokens``) wrote:
    ``train.safetensors`` and ``validation.safetensors`` (``context_tokens``/``target_tokens``
    ``(N, Q, L)``, ``instrument``, ``song_index``) and ``tokens.json`` (the codec, the crop
    length). Each training example is a window of ``crop_seconds`` at a random offset in its L
    frames (a new offset every epoch, the same again on resume); validation takes every example's first window.

    Args:
        root: the exported tokens.
        crop_seconds: the training window (at most the exported crop length).
        codec: where to load the codec (for the model's record and the Q/V check; default: the
            one ``tokens.json`` names). Its fingerprint must be the exported tokens'.
        batch_size: examples per batch.
        seed: seed of the shuffling and the offsets.
        extra_train: more exported token folders whose training examples are added to ``root``'s
            (e.g. augmented versions of the training songs, `stemgen data chorales --versions`);
            same codec and crop length; validation stays ``root``'s alone.
        instrument_repeats: ``{instrument: k}``: each training example whose target is that
            instrument appears k times per epoch (each time with its own window), e.g.
            ``{"bass": 4}`` for a fine-tune that favours the bass; validation is unchanged.
        instrument_free_train: more exported token folders (as ``extra_train``) whose examples are
            trained with the instrument always left out (their batches say ``instrument_free``): they
            teach the instrument-free guidance branch p(t|a) alone, e.g. contexts without a kit
            whose missing part is pitched, so that p(t|a) does not take every such context for a
            missing drum part.
        instrument_free_share: with ``instrument_free_train``, the share of each epoch's training
            examples that are instrument-free (each such index drawn afresh from all of them), instead
            of all of them once each: e.g. 0.1, as often as condition dropout drops an instrument.
    """

    def __init__(self, root: str | Path, crop_seconds: float = 4.0, codec: str | None = None,
                 batch_size: int = 16, seed: int = 0, extra_train: list[str] | None = None,
                 instrument_repeats: dict[str, int] | None = None, instrument_free_train: list[str] | None = None,
                 instrument_free_share: float | None = None):
        super().__init__()
        self.root = Path(root).expanduser()
        self.instrument_repeats = {}
        for name, k in (instrument_repeats or {}).items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"instrument_repeats[{name!r}] must be a whole number >= 1 (times per epoch), got {k!r}.")
            self.instrument_repeats[resolve(name).id] = k
        self.meta = read_tokens_meta(self.root)
        self.extra_train = [Path(r).expanduser() for r in extra_train or []]
        self.instrument_free_train = [Path(r).expanduser() for r in instrument_free_train or []]
        if instrument_free_share is not None and not (0.0 < instrument_free_share < 1.0 and self.instrument_free_train):
            raise ValueError(f"instrument_free_share must be in (0, 1) and comes with instrument_free_train (the "
                             f"examples it shares out), got {instrument_free_share!r} with "
                             f"{len(self.instrument_free_train)} instrument-free folder(s).")
        self.instrument_free_share = instrument_free_share
        for extra in self.extra_train + self.instrument_free_train:
            m = read_tokens_meta(extra)
            if m["codec"].get("fingerprint") != self.meta["codec"].get("fingerprint") or \
                    m["crop_seconds"] != self.meta["crop_seconds"]:
                raise DatasetError(f"the tokens in {extra} (codec {m['codec'].get('fingerprint')}, crops of "
                                   f"{m['crop_seconds']} s) do not match those in {self.root} (codec "
                                   f"{self.meta['codec'].get('fingerprint')}, {self.meta['crop_seconds']} s): "
                                   f"export them with the same --codec and --crop_seconds.")
        self.codec_name = codec or self.meta["codec"]["name"]
        self.crop_seconds = float(crop_seconds)
        if self.crop_seconds > self.meta["crop_seconds"] + 1e-9:
            raise ValueError(f"crop_seconds={crop_seconds} is longer than the exported crops "
                             f"({self.meta['crop_seconds']} s): export longer crops or train on shorter ones.")
        self.batch_size, self.seed = batch_size, seed
        self._codec = None
        self.datasets: dict[str, torch.utils.data.Dataset] = {}

    @property
    def codec(self):
        """The codec the tokens came from (loaded on first use; its fingerprint is checked)."""
        if self._codec is None:
            from ..codec import load_codec

            codec = load_codec(self.codec_name)
            if codec.fingerprint() != self.meta["codec"].get("fingerprint"):
                raise DatasetError(f"the codec at {self.codec_name} ({codec.fingerprint()}) is not the one the tokens "
                                   f"in {self.root} were made with ({self.meta['codec'].get('fingerprint')}).")
            self._codec = codec
        return self._codec

    def setup(self, stage: str | None = None) -> None:
        frames = int(round(self.crop_seconds * self.meta["codec"]["frame_rate"]))
        for split in ("train", "validation"):
            if split not in self.datasets and (self.root / f"{split}.safetensors").exists():
                extra = [r / "train.safetensors" for r in self.extra_train] if split == "train" else []
                free = [r / "train.safetensors" for r in self.instrument_free_train] if split == "train" else []
                self.datasets[split] = TokenWindows([self.root / f"{split}.safetensors", *extra, *free], frames,
                                                    random_offset=split == "train", seed=self.seed,
                                                    repeats=self.instrument_repeats if split == "train" else None,
                                                    instrument_free=[False] * (1 + len(extra)) + [True] * len(free),
                                                    free_share=self.instrument_free_share if split == "train" else None)

    def train_dataloader(self):
        self.setup()
        return epoch_loader(self, self.datasets["train"], shuffle=True)

    def val_dataloader(self):
        self.setup()
        return epoch_loader(self, self.datasets["validation"], shuffle=False)


def read_tokens_meta(root: Path) -> dict:
    """``root/tokens.json`` of an exported token folder, or a clear error."""
    meta_path = root / TOKENS_META
    if not meta_path.exists():
        raise DatasetError(f"no exported tokens in {root} (need {TOKENS_META}); write them with "
                           f"`stemgen data tokens {root}`.")
    return json.loads(meta_path.read_text())


class TokenWindows(torch.utils.data.Dataset):
    """Windows of ``frames`` frames of the N examples of exported token files (one path or
    several, concatenated; song indices are offset so that songs of different files never
    share one). Index ``i >= 0`` is example ``i mod N``; with ``random_offset`` its window starts
    at an offset drawn from ``(seed, i)`` (so :class:`EpochSampler`'s ``epoch * N + j`` gives a
    new offset every epoch, and the same one again on resume), else at frame 0. ``repeats``
    (``{instrument id: k}``) lists the examples of those target instruments k times (N grows).
    ``instrument_free`` (one flag per path): the examples of the flagged files carry
    ``instrument_free`` True (trained without their instrument), the others False. ``free_share``: the
    flagged examples take that share of the indices instead of one each: indices past the others' are
    each one of them drawn from ``(seed, i)`` (every flagged example, over the epochs, without growing N)."""

    def __init__(self, path: Path | list[Path], frames: int, random_offset: bool, seed: int = 0,
                 repeats: dict[int, int] | None = None, instrument_free: list[bool] | None = None,
                 free_share: float | None = None):
        from safetensors.torch import load_file

        paths = path if isinstance(path, list) else [path]
        parts = [load_file(str(p)) for p in paths]
        if instrument_free is not None and len(instrument_free) != len(paths):
            raise ValueError(f"instrument_free names {len(instrument_free)} files, the paths {len(paths)}")
        if len({d["context_tokens"].shape[-1] for d in parts}) > 1:
            raise ValueError(f"token files of different crop lengths: {path}")
        songs, offset = [], 0
        for d in parts:
            songs.append(d["song_index"] + offset)
            offset += int(d["song_index"].max()) + 1 if len(d["song_index"]) else 0
        self.context = torch.cat([d["context_tokens"] for d in parts])
        self.target = torch.cat([d["target_tokens"] for d in parts])
        self.instrument, self.song_index = torch.cat([d["instrument"] for d in parts]), torch.cat(songs)
        # the contexts' chroma codes, where every file has them (exports before they existed do not)
        has_chroma = all("context_chroma" in d for d in parts)
        self.chroma = torch.cat([d["context_chroma"] for d in parts]) if has_chroma else None
        self.instrument_free = None if not any(instrument_free or []) else torch.cat(
            [torch.full((len(d["instrument"]),), bool(f)) for d, f in zip(parts, instrument_free)])
        if frames > self.context.shape[-1]:
            raise ValueError(f"windows of {frames} frames from crops of {self.context.shape[-1]}")
        self.frames, self.random_offset, self.seed = frames, random_offset, seed
        times = torch.ones_like(self.instrument)
        for inst, k in (repeats or {}).items():
            times[self.instrument == inst] = k
        self.rows = torch.repeat_interleave(torch.arange(len(self.instrument)), times)  # (N,) example of each index
        self.free_rows, self.free_slots = None, 0
        if free_share is not None and self.instrument_free is not None:
            flagged = self.instrument_free[self.rows]
            self.free_rows, self.rows = self.rows[flagged], self.rows[~flagged]
            self.free_slots = max(1, round(free_share / (1.0 - free_share) * len(self.rows)))

    def __len__(self) -> int:
        return len(self.rows) + self.free_slots

    def row(self, i: int) -> int:
        """The example index ``i`` shows."""
        j = i % len(self)
        if j < len(self.rows):
            return int(self.rows[j])
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i + 7_777_777)
        return int(self.free_rows[int(torch.randint(len(self.free_rows), (1,), generator=gen))])

    def start(self, i: int) -> int:
        """First frame of the window of index ``i``."""
        spare = self.context.shape[-1] - self.frames
        if not self.random_offset or spare == 0:
            return 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return int(torch.randint(spare + 1, (1,), generator=gen))

    def __getitem__(self, i: int) -> dict:
        k, start = self.row(i), self.start(i)
        window = slice(start, start + self.frames)
        item = {"context_tokens": self.context[k, :, window].long(), "target_tokens": self.target[k, :, window].long(),
                "instrument": self.instrument[k], "song_index": self.song_index[k]}
        if self.chroma is not None:
            item["context_chroma"] = self.chroma[k, window].long()
        if self.instrument_free is not None:
            item["instrument_free"] = self.instrument_free[k]
        return item
