"""Pair enumeration and sampling: counts, invariants, silence rejection, determinism."""

import numpy as np
import pytest
import torch

from stemgen.audio import dbfs
from stemgen.data.dataset import EpochSampler, PairDataset
from stemgen.data.pairs import draw_pair, enumerate_pairs, pair_count, read_crop, sample_pair, segments
from stemgen.data.songs import scan

from .fixtures import SR, make_slakh, stem_meta, tone, write_track


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_pair_count_matches_enumeration(m):
    pairs = enumerate_pairs(m)
    assert len(pairs) == len(set(pairs)) == pair_count(m) == m * (2 ** m - 2) // 2
    assert all(t not in ctx and 1 <= len(ctx) < m for ctx, t in pairs)


def test_draws_cover_exactly_the_enumerated_pairs():
    rng = np.random.default_rng(0)
    seen = {draw_pair(4, rng) for _ in range(3000)}
    assert seen == set(enumerate_pairs(4))


def test_segments_cut_songs_into_minutes(tmp_path):
    write_track(tmp_path / "train" / "Track00001", {"S00": stem_meta(0), "S01": stem_meta(33)}, seconds=5.0)
    song = scan(tmp_path, "train").songs[0]
    assert segments(song, 2.0) == [(0, 2 * SR), (2 * SR, 4 * SR), (4 * SR, 5 * SR)]
    assert segments(song, 2.0, min_seconds=1.5) == [(0, 2 * SR), (2 * SR, 4 * SR)]


def test_context_is_the_sum_of_its_stems_at_the_target_rate(tmp_path):
    root = make_slakh(tmp_path)
    song = next(s for s in scan(root, "train").songs if s.id == "Track00001")
    rng = np.random.default_rng(1)
    for _ in range(10):
        pair = sample_pair(song, (0, song.num_samples), 0, rng, sample_rate=32000, crop_seconds=1.0)
        assert pair.context.shape == pair.target.shape == (32000,)
        assert pair.target_stem not in pair.context_stems
        start = round(pair.start_seconds * SR)
        by_name = {s.name: s for s in song.stems}
        parts = [read_crop(by_name[n].path, start, SR, SR, 32000, 32000) for n in pair.context_stems]
        np.testing.assert_allclose(pair.context, np.sum(parts, axis=0), atol=1e-5)
        assert pair.instrument == by_name[pair.target_stem].instrument


def test_silent_stems_are_rejected(tmp_path):
    write_track(tmp_path / "train" / "Track00001",
                {"S00": stem_meta(0), "S01": stem_meta(33), "S02": stem_meta(40)},
                audio={"S01": np.zeros(3 * SR, dtype=np.float32)})
    song = scan(tmp_path, "train").songs[0]
    rng = np.random.default_rng(0)
    for _ in range(40):
        pair = sample_pair(song, (0, song.num_samples), 0, rng, sample_rate=32000, crop_seconds=1.0)
        assert pair.target_stem != "S01" and pair.context_stems != ("S01",)
        assert dbfs(pair.target) > -50 and dbfs(pair.context) > -50
    write_track(tmp_path / "quiet" / "Track00002", {"S00": stem_meta(0), "S01": stem_meta(33)},
                audio={"S00": tone(100, 3.0, amp=1e-4), "S01": tone(200, 3.0, amp=1e-4)})
    quiet = scan(tmp_path, "quiet").songs[0]
    assert sample_pair(quiet, (0, quiet.num_samples), 0, rng, sample_rate=32000, crop_seconds=1.0) is None
    assert sample_pair(quiet, (0, quiet.num_samples), 0, rng, sample_rate=32000, crop_seconds=1.0,
                       silence_db=-90) is not None


def test_dataset_is_reproducible_and_worker_independent(tmp_path):
    songs = scan(make_slakh(tmp_path), "train").songs
    ds = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=7)
    assert len(ds) == 4  # two songs, two 1.5 s segments each
    a = [ds[i] for i in range(len(ds))]
    b = [ds[i] for i in range(len(ds))]
    for x, y in zip(a, b):
        assert torch.equal(x["context"], y["context"]) and x["instrument"] == y["instrument"]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batched = torch.cat([batch["context"] for batch in loader])
    assert torch.equal(batched, torch.stack([x["context"] for x in a]))


def test_epoch_sampler_gives_new_examples_each_epoch():
    sampler = EpochSampler(5, shuffle=True, seed=3)
    first = list(sampler)
    assert sorted(first) == [0, 1, 2, 3, 4] and first == list(sampler)
    sampler.set_epoch(2)
    second = list(sampler)
    assert sorted(second) == [10, 11, 12, 13, 14]
    assert list(EpochSampler(3, shuffle=False)) == [0, 1, 2]


def test_later_epochs_draw_other_crops(tmp_path):
    songs = scan(make_slakh(tmp_path), "train").songs
    ds = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=7)
    n = len(ds)
    assert not all(torch.equal(ds[i]["context"], ds[n + i]["context"]) for i in range(n))
    assert all(ds[i]["song"] == ds[n + i]["song"] for i in range(n))  # same segment, new draw


def test_unreadable_audio_is_skipped_not_fatal(tmp_path, caplog):
    write_track(tmp_path / "train" / "Track00001", {"S00": stem_meta(0), "S01": stem_meta(33)})
    write_track(tmp_path / "train" / "Track00002", {"S00": stem_meta(0), "S01": stem_meta(33)})
    songs = scan(tmp_path, "train").songs
    path = tmp_path / "train" / "Track00001" / "stems" / "S00.flac"
    path.write_bytes(path.read_bytes()[:200])  # header intact, audio gone
    ds = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=3.0, seed=0)
    items = [ds[i] for i in range(len(ds))]
    assert all(item["song"] == "Track00002" for item in items)
    assert ds.broken == {0} and "Track00001" in caplog.text


def test_epoch_sampler_shards_over_ranks():
    shards = [list(EpochSampler(10, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 3 for s in shards)
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert isinstance(EpochSampler(4), torch.utils.data.DistributedSampler)


def test_a_pitched_target_gets_harmony_when_asked():
    from pathlib import Path

    from stemgen.data.pairs import with_harmony
    from stemgen.data.songs import Song, StemFile
    from stemgen.instruments import DRUMS_ID

    song = Song("s", tuple(StemFile(n, Path(n), i) for n, i in
                           [("drums", DRUMS_ID), ("bass", 4), ("piano", 0), ("organ", 2)]), 32000, 32000)
    rng = np.random.default_rng(0)
    fixed = {with_harmony(song, (0,), 1, rng) for _ in range(50)}
    assert fixed == {(0, 2), (0, 3)}  # drums + one pitched stem, never the target itself
    assert with_harmony(song, (0, 2), 1, rng) == (0, 2)  # already harmonic: unchanged
    assert with_harmony(song, (1,), 0, rng) == (1,)  # a drums target: unchanged
    only = Song("t", song.stems[:2], 32000, 32000)
    assert with_harmony(only, (0,), 1, rng) == (0,)  # nothing pitched to add


def test_full_context_makes_the_context_every_other_stem(tmp_path):
    songs = scan(make_slakh(tmp_path), "train").songs
    plain = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=7)
    full = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=7, full_context=1.0)
    draws = [full.draw(i) for i in range(40)]
    for p in draws:
        song = next(s for s in songs if s.id == p.song)
        assert set(p.context_stems) == {s.name for s in song.stems} - {p.target_stem}
    # the paper's random subsets are smaller some of the time; 0 leaves them (and their draws) as they were
    assert any(len(plain.draw(i).context_stems) < len(draws[i].context_stems) for i in range(40))
    again = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=7, full_context=0.0)
    assert all(plain.draw(i).context_stems == again.draw(i).context_stems for i in range(10))
    with pytest.raises(ValueError, match="full_context is a probability"):
        PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, full_context=1.5)


def test_pitched_context_leaves_the_drums_out_for_pitched_targets_only(tmp_path):
    from stemgen.data.pairs import without_drums
    from stemgen.instruments import DRUMS_ID

    songs = [s for s in scan(make_slakh(tmp_path), "train").songs if s.id == "Track00001"]  # bass, piano, drums, guitar
    song = songs[0]
    names = {s.name: i for i, s in enumerate(song.stems)}
    drums = next(s.name for s in song.stems if s.instrument == DRUMS_ID)
    assert without_drums(song, (names["S01"], names[drums]), names["S00"]) == (names["S01"],)
    assert without_drums(song, (names[drums],), names["S00"]) == (names[drums],)  # nothing pitched left: kept
    assert without_drums(song, (names["S00"], names["S01"]), names[drums]) == (names["S00"], names["S01"])
    full = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=3, full_context=1.0)
    kitless = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=3, full_context=1.0,
                          pitched_context=1.0)
    targets = set()
    for i in range(30):
        a, b = full.draw(i), kitless.draw(i)
        # at 1 no random number is drawn: the same crop and target, the kit gone from a pitched target's context
        assert (a.start_seconds, a.target_stem) == (b.start_seconds, b.target_stem)
        expected = set(a.context_stems) - ({drums} if a.target_stem != drums else set())
        assert set(b.context_stems) == expected
        if a.target_stem == drums:
            assert np.array_equal(a.context, b.context)
        else:
            assert drums in a.context_stems and not np.allclose(a.context, b.context)
        targets.add(a.target_stem)
    assert drums in targets and len(targets) > 2
    half = PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, seed=3, full_context=1.0,
                       pitched_context=0.5)
    pitched = [p for p in (half.draw(i) for i in range(60)) if p.target_stem != drums]
    assert 0 < sum(drums in p.context_stems for p in pitched) < len(pitched)
    with pytest.raises(ValueError, match="pitched_context is a probability"):
        PairDataset(songs, 32000, crop_seconds=1.0, segment_seconds=1.5, pitched_context=-0.1)


def test_min_target_active_rejects_targets_that_sound_in_only_part_of_the_crop(tmp_path):
    from stemgen.audio import silent_fraction

    late = np.zeros(2 * SR, np.float32)
    late[: int(0.4 * SR)] = tone(220.0, 0.4)  # sounds in the first 0.4 s of 2 s, as a voice that drops out
    write_track(tmp_path / "train" / "Track00001",
                {"S00": stem_meta(33), "S01": stem_meta(0), "S02": stem_meta(41)}, audio={"S01": late}, seconds=2.0)
    songs = scan(tmp_path, "train").songs
    plain = PairDataset(songs, 32000, crop_seconds=2.0, segment_seconds=2.0, seed=3)
    strict = PairDataset(songs, 32000, crop_seconds=2.0, segment_seconds=2.0, seed=3, min_target_active=0.5)
    plain_targets = [plain.draw(i) for i in range(60)]
    strict_targets = [strict.draw(i) for i in range(60)]
    # the paper's rule keeps the mostly silent stem as a target (its RMS over the crop is above -50 dBFS)
    assert "S01" in {p.target_stem for p in plain_targets}
    assert {p.target_stem for p in strict_targets} == {"S00", "S02"}
    assert all(1 - silent_fraction(p.target, 32000) >= 0.5 for p in strict_targets)
    assert 1 - silent_fraction(next(p for p in plain_targets if p.target_stem == "S01").target, 32000) < 0.25
    # a stem that sounds everywhere is still the context, and 0 leaves the draws as they were
    assert any("S01" in p.context_stems for p in strict_targets)
    again = PairDataset(songs, 32000, crop_seconds=2.0, segment_seconds=2.0, seed=3, min_target_active=0.0)
    assert all(again.draw(i).target_stem == plain_targets[i].target_stem for i in range(20))
    with pytest.raises(ValueError, match="min_target_active is a fraction"):
        PairDataset(songs, 32000, crop_seconds=2.0, segment_seconds=2.0, min_target_active=-0.1)
