"""A torch ``Dataset`` of training pairs over a list of songs.

Index ``i`` draws from segment ``i mod len(dataset)`` with a generator seeded by
``(seed, i)``: examples are reproducible whatever the number of DataLoader workers or their
order. :class:`EpochSampler` hands out the indices ``epoch * n + permutation``, so every epoch
draws new crops and pairs while any index always gives the same example. Silent draws move to
the next segment; a song whose audio turns out unreadable is reported once, counted and
avoided from then on (within that worker process).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .pairs import Pair, sample_pair, segments
from .songs import DatasetError, Song

log = logging.getLogger(__name__)


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset of (context, target, instrument) examples.

    Args:
        songs: the songs (see :func:`stemgen.data.songs.scan`).
        sample_rate: rate of the returned audio (Hz), the codec's.
        crop_seconds: example length in seconds (20 in the paper).
        segment_seconds: songs are cut into segments of this length (60 in the paper).
        silence_db: a context or target below this RMS level (dBFS) is rejected.
        seed: base seed.
        harmonic_context: a pitched target never gets a drums-only context
            (:func:`stemgen.data.pairs.with_harmony`).
        full_context: probability that a pair's context is every other stem (see
            :func:`stemgen.data.pairs.sample_pair`).
        min_target_active: the least fraction of a crop in which the target sounds (see
            :func:`stemgen.data.pairs.sample_pair`; 0: only a silent target is rejected).
        pitched_context: probability that a pitched target's context leaves out the drums (see
            :func:`stemgen.data.pairs.sample_pair`).

    Items are dicts: ``context`` and ``target`` float32 ``(L,)``, ``instrument`` int64 (),
    ``song`` str, ``song_index`` int64 () (its position in ``songs``: tells examples of one song
    apart from another's, e.g. for a mismatched context), ``segment`` int, ``start_seconds`` float.
    """

    def __init__(self, songs: list[Song], sample_rate: int, crop_seconds: float = 20.0,
                 segment_seconds: float = 60.0, silence_db: float = -50.0, seed: int = 0,
                 harmonic_context: bool = False, full_context: float = 0.0, min_target_active: float = 0.0,
                 pitched_context: float = 0.0):
        for name, p in (("full_context", full_context), ("pitched_context", pitched_context)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}.")
        if not 0.0 <= min_target_active <= 1.0:
            raise ValueError(f"min_target_active is a fraction of the crop in [0, 1], got {min_target_active}.")
        self.songs = list(songs)
        self.sample_rate = sample_rate
        self.crop_seconds = crop_seconds
        self.silence_db = silence_db
        self.seed = seed
        self.harmonic_context = harmonic_context
        self.full_context = full_context
        self.min_target_active = min_target_active
        self.pitched_context = pitched_context
        self.index = [(s, seg) for s, song in enumerate(self.songs)
                      for seg in segments(song, segment_seconds, min_seconds=min(crop_seconds, segment_seconds) / 2)]
        if not self.index:
            raise DatasetError(f"no segment of at least {crop_seconds / 2:g} s in {len(self.songs)} songs")
        self._song_index = {song.id: i for i, song in enumerate(self.songs)}
        self.broken: set[int] = set()
        self.silent_segments = 0

    def __len__(self) -> int:
        return len(self.index)

    def draw(self, i: int) -> Pair:
        """The example for index ``i >= 0`` as a :class:`Pair` (numpy audio)."""
        rng = np.random.default_rng([self.seed, i])
        for k in range(len(self.index)):
            song_idx, seg = self.index[(i + k) % len(self.index)]
            if song_idx in self.broken:
                continue
            song = self.songs[song_idx]
            try:
                pair = sample_pair(song, seg, (i + k) % len(self.index), rng, sample_rate=self.sample_rate,
                                   crop_seconds=self.crop_seconds, silence_db=self.silence_db,
                                   harmonic_context=self.harmonic_context, full_context=self.full_context,
                                   min_target_active=self.min_target_active, pitched_context=self.pitched_context)
            except DatasetError as err:
                self.broken.add(song_idx)
                log.warning("skipping song %s from now on: %s (%d broken songs)", song.id, err, len(self.broken))
                continue
            if pair is not None:
                return pair
            self.silent_segments += 1
        raise DatasetError("every segment of the dataset is silent or unreadable: check the audio, "
                           "the silence threshold (silence_db) and min_target_active.")

    def __getitem__(self, i: int) -> dict:
        p = self.draw(i)
        return {"context": torch.from_numpy(p.context), "target": torch.from_numpy(p.target),
                "instrument": torch.tensor(p.instrument, dtype=torch.long), "song": p.song,
                "song_index": torch.tensor(self._song_index[p.song], dtype=torch.long),
                "segment": p.segment, "start_seconds": p.start_seconds}


class EpochSampler(torch.utils.data.DistributedSampler):
    """Indices ``epoch * n + p(i)`` for a (seeded, per-epoch) permutation p of ``range(n)``,
    sharded over ``num_replicas`` processes.

    Lightning calls :meth:`set_epoch` at each epoch, so each epoch visits every segment once
    with fresh crops and pairs. It is a ``DistributedSampler`` so that Lightning uses it as it
    is under DDP/FSDP (rank r takes every ``num_replicas``-th index of the permutation; the
    remainder is dropped so all ranks have the same length). ``skip`` drops the first indices
    of the next iteration only (resuming mid-epoch).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        # DistributedSampler.__init__ wants a dataset and an initialised process group: not needed here
        if n < num_replicas:
            raise ValueError(f"{n} examples cannot be shared by {num_replicas} processes.")
        self.n, self.shuffle, self.seed, self.epoch, self.skip = n, shuffle, seed, 0, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = n // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
                 if self.shuffle else torch.arange(self.n))
        mine = order[self.rank :: self.num_replicas][: self.num_samples]
        skip, self.skip = self.skip, 0
        return iter((self.epoch * self.n + mine[skip:]).tolist())


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position is saved in checkpoints.

    Lightning stores ``state_dict()`` in each checkpoint and hands it back to
    ``load_state_dict`` on resume, so a run stopped mid-epoch continues with the very batches
    the uninterrupted run would have seen. ``progress()`` returns the batches of the current
    epoch the training loop has finished.
    """

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress
        self._skip_batches = 0

    def __iter__(self):
        self.sampler.skip = self._skip_batches * self.batch_size
        self._skip_batches = 0
        return super().__iter__()

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": int(self._progress()) if self._progress else 0}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        done = int(state["batches"])
        self._skip_batches = done if done < len(self) else 0  # a finished epoch: the next starts afresh
