"""Reading Slakh-layout and user stem folders, with every kind of broken input."""

import logging

import pytest

from stemgen.data.songs import DatasetError, read_yaml, scan, song_folders
from stemgen.instruments import DRUMS_ID

from .fixtures import make_slakh, make_stem_folder


@pytest.fixture()
def slakh(tmp_path):
    return make_slakh(tmp_path / "slakh")


def test_scan_reads_good_tracks_and_counts_the_rest(slakh, caplog):
    with caplog.at_level(logging.WARNING):
        report = scan(slakh, "train")
    songs = {s.id: s for s in report.songs}
    assert sorted(songs) == ["Track00001", "Track00002"]
    t1 = songs["Track00001"]
    assert [(s.name, s.instrument) for s in t1.stems] == [("S00", 4), ("S01", 0), ("S02", DRUMS_ID), ("S03", 3)]
    assert t1.sample_rate == 44100 and t1.num_samples == 3 * 44100
    t2 = songs["Track00002"]  # S02 not rendered (no file), S03 corrupt
    assert [s.name for s in t2.stems] == ["S00", "S01"]
    assert sorted(report.skipped) == [str(slakh / "train" / "Track00003"), str(slakh / "train" / "Track00004")]
    assert "fewer than 2 usable stems" in report.skipped[str(slakh / "train" / "Track00004")]
    assert report.stems_skipped == 1  # the corrupt FLAC
    assert "Track00003" in caplog.text and "S03.flac" in caplog.text


def test_stray_bytes_before_yaml(tmp_path):
    p = tmp_path / "m.yaml"
    for prefix in (b"\x00", b"\xef\xbb\xbf", b"`"):
        p.write_bytes(prefix + b"UUID: abc\nstems:\n  S00: {program_num: 3}\n")
        assert read_yaml(p)["stems"]["S00"]["program_num"] == 3


def test_redux_and_orig_splits(slakh):
    assert [p.name for p in song_folders(slakh, "validation", "redux")] == ["Track01501"]
    assert [p.name for p in song_folders(slakh, "validation", "orig")] == ["Track01501", "Track01502"]
    assert [p.name for p in song_folders(slakh, "test", "orig")] == ["Track01876"]
    assert "Track01502" not in [s.id for s in scan(slakh, "validation").songs]
    assert "Track01502" in [s.id for s in scan(slakh, "validation", variant="orig").songs]
    with pytest.raises(ValueError, match="redux"):
        song_folders(slakh, "train", "v3")


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no usable songs in .*empty/train"):
        scan(tmp_path / "empty", "train")


def test_user_stem_folder(tmp_path, caplog):
    root = make_stem_folder(tmp_path / "mine")
    with caplog.at_level(logging.WARNING):
        report = scan(root, split=None, layout="stems")
    assert [s.id for s in report.songs] == ["my_song"]
    stems = {s.name: s.instrument for s in report.songs[0].stems}
    assert stems == {"bass": 4, "keys": 0, "beat": DRUMS_ID}
    assert "kazoo" in report.skipped[str(root / "odd_song")]


def test_cached_scan_is_reused_and_invalidated(slakh, isolated_home, monkeypatch):
    import time

    from stemgen.data import songs as songs_mod

    first = songs_mod.cached_scan(slakh, "train")
    assert list((isolated_home / "index").glob("*.json"))
    calls = []
    monkeypatch.setattr(songs_mod, "scan", lambda *a, **k: calls.append(a) or first)
    again = songs_mod.cached_scan(slakh, "train")
    assert calls == [] and again.songs == first.songs and again.skipped == first.skipped
    time.sleep(0.01)
    meta = slakh / "train" / "Track00001" / "metadata.yaml"
    meta.write_bytes(meta.read_bytes())  # touched: the index is rebuilt
    songs_mod.cached_scan(slakh, "train")
    assert len(calls) == 1
