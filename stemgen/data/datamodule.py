"""LightningDataModules that serve batches of training pairs as audio and codec tokens.

* :class:`SlakhData` - a local Slakh2100 copy (``redux`` or ``orig`` split);
* :class:`ChoralesData` - the embedded Bach chorales (rendered on first use);
* :class:`StemsData` - a folder of the user's own stems (``SONG/stems/`` + ``stems.yaml``).

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

import torch

from ..paths import atomic_write, home
from .dataset import EpochSampler, PairDataset, ResumableLoader
from .songs import DatasetError, Song, cached_scan, check_variant

try:  # lightning is a dependency, but keep `import stemgen.data` light
    from lightning import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object

log = logging.getLogger(__name__)


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
            ctx, tgt, inst, song = [], [], [], []
            with torch.no_grad():
                for start in tqdm(range(0, n, batch_size), desc=f"caching tokens ({n} examples)",
                                  disable=not progress):
                    items = [pairs[i] for i in range(start, min(start + batch_size, n))]
                    ctx.append(codec.encode(torch.stack([it["context"] for it in items])))
                    tgt.append(codec.encode(torch.stack([it["target"] for it in items])))
                    inst.append(torch.stack([it["instrument"] for it in items]))
                    song.append(torch.stack([it["song_index"] for it in items]))
            tensors = {"context_tokens": torch.cat(ctx).to(torch.int16), "target_tokens": torch.cat(tgt).to(torch.int16),
                       "instrument": torch.cat(inst), "song_index": torch.cat(song)}
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))  # DDP ranks may build it at once
        data = load_file(str(path))
        self.context = data["context_tokens"].long()
        self.target = data["target_tokens"].long()
        self.instrument = data["instrument"]
        self.song_index = data["song_index"]

    def __len__(self) -> int:
        return len(self.instrument)

    def __getitem__(self, i: int) -> dict:
        return {"context_tokens": self.context[i], "target_tokens": self.target[i], "instrument": self.instrument[i],
                "song_index": self.song_index[i]}


class PairDataModule(LightningDataModule):
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
    """

    layout = "auto"
    variant = "redux"

    def __init__(self, root: str | Path | None = None, codec: str = "embedded", crop_seconds: float = 20.0,
                 segment_seconds: float = 60.0, silence_db: float = -50.0, batch_size: int = 8,
                 num_workers: int = 2, seed: int = 0, tokens: bool = True, cache_eval_tokens: bool = True,
                 train_token_epochs: int = 0, harmonic_context: bool = False):
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
            # validation and test keep the paper's pair distribution, whatever training draws
            pairs = PairDataset(self.songs(split), self.codec.sample_rate, self.crop_seconds,
                                self.segment_seconds, self.silence_db, seed=self.seed + {"train": 0}.get(split, 1),
                                harmonic_context=self.harmonic_context and split == "train")
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
                          "harmonic": pairs.harmonic_context}, sort_keys=True)
        return home() / "tokens" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.safetensors"

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        if split not in self.datasets:
            self.setup(None)
        ds = self.datasets[split]
        if isinstance(ds, PairDataset):
            loader = ResumableLoader if shuffle else torch.utils.data.DataLoader
            extra = {"progress": self._batches_done} if shuffle else {}
            trainer = getattr(self, "trainer", None)
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            return loader(ds, batch_size=self.batch_size, drop_last=shuffle,
                          sampler=EpochSampler(len(ds), shuffle=shuffle, seed=self.seed, num_replicas=world, rank=rank),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **extra)
        # cached tokens: in memory already, no workers needed
        gen = torch.Generator().manual_seed(self.seed)
        sampler = torch.utils.data.RandomSampler(ds, generator=gen) if shuffle else None
        return torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=shuffle)

    def _batches_done(self) -> int:
        """Training batches finished in the current epoch (0 outside a Trainer)."""
        trainer = getattr(self, "trainer", None)
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0

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
        return batch


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
