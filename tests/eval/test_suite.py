"""The benchmark suite end to end on a tiny run: grid, triples, cached generations, scores."""

import json

import numpy as np
import pytest
import torch

from stemgen.eval.suite import GridEntry, draw_triples, load_grid


def test_grids_load_and_map_to_generate_arguments(tmp_path, tiny_model):
    from pathlib import Path

    from stemgen.sampling.settings import SamplingSettings

    root = Path(__file__).resolve().parents[2] / "configs" / "eval"
    t2 = load_grid(root / "table2_causal_bias.yaml")
    assert [e.causal_bias for e in t2.entries] == [0.0, 0.1, 0.2, 0.5] and t2.paper["MIRDD"] == [0.32, 0.14, 0.18, 0.20]
    t1 = load_grid(root / "table1_guidance.yaml")
    assert t1.entries[1].generate_kwargs()["guidance"] == (1.0, 3.0)
    t3 = {e.name: e for e in load_grid(root / "table3_naive_best.yaml").entries}
    assert set(t3) == {"naive", "best", "default"}
    # what each entry runs, every setting: naive is the paper's naive setting, best its best
    assert tiny_model.settings(**t3["naive"].generate_kwargs()) == SamplingSettings.naive()
    assert tiny_model.settings(**t3["best"].generate_kwargs()) == SamplingSettings.paper()
    assert tiny_model.settings(**t2.entries[0].generate_kwargs()) == SamplingSettings(w_position=0.0)
    hot = GridEntry("hot", naive=True, temperature=0.5).generate_kwargs()
    assert tiny_model.settings(**hot) == SamplingSettings.naive(temperature=(0.5,) * 4)
    # "paper" stays the paper's best for a model whose export records its own default; "model" is that
    import copy

    own = copy.copy(tiny_model)
    own.default_settings = SamplingSettings.naive(temperature=(0.5, 1.0, 1.0, 1.0))
    assert own.settings(**t3["best"].generate_kwargs()) == SamplingSettings.paper()
    assert own.settings(**t3["default"].generate_kwargs()) == own.default_settings
    per_level = GridEntry("cool", naive=True, temperature=[0.5, 1, 1, 1]).generate_kwargs()
    assert own.settings(**per_level) == own.default_settings
    with pytest.raises(ValueError, match="base must be one of"):
        GridEntry("x", base="best")
    (tmp_path / "bad.yaml").write_text("configs: [{name: a}, {name: a}]")
    with pytest.raises(ValueError, match="unique"):
        load_grid(tmp_path / "bad.yaml")


def test_triples_are_drawn_from_the_held_out_split(chorales_dir):
    t = draw_triples(chorales_dir, 5, 32000, 2.0)
    assert len(t) == 5 and all(p.context.shape == (64000,) == p.target.shape for p in t)
    assert all("test" in str(p.song) or p.song for p in t)
    again = draw_triples(chorales_dir, 5, 32000, 2.0)
    assert all(np.array_equal(a.context, b.context) and a.instrument == b.instrument for a, b in zip(t, again))


@pytest.mark.slow
def test_tiny_suite_run_resumes_and_scores(tmp_path, chorales_dir, tiny_export):
    from pathlib import Path

    from stemgen.cli import main

    grid = Path(__file__).resolve().parents[2] / "configs" / "eval" / "tiny.yaml"
    out = tmp_path / "bench"
    args = ["bench", "mirdd", str(grid), "--out", str(out), "--model", str(tiny_export), "--data",
            str(chorales_dir), "--n", "4", "--seconds", "2", "--batch_size", "2", "--rounds", "20",
            "--precision", "fp32"]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["configs"]) == {"naive", "best"} and r["n"] == 4 and r["model"].endswith("fp32)")
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"] and r["machine"]["torch"] == torch.__version__
    assert r["configs"]["naive"]["settings"]["guidance"] is False and r["configs"]["naive"]["settings"]["w_position"] == 0
    assert r["configs"]["best"]["settings"]["steps"] == [2, 2, 1, 1]
    for name, c in r["configs"].items():
        assert np.isfinite(c["mirdd"]["mirdd"]) and c["mirdd"]["n_generated"] == 4
        assert len(c["mirdd"]["descriptors"]) == 11 and c["fd_logmel"] >= 0
        assert c["fad_vggish"] is None and "VGGish" in c["not_computed"]["fad_vggish"]  # offline: no weights
        assert {"chroma", "chroma_mismatched", "chroma_gap", "beat_gap"} <= set(c["context_agreement"])
        assert len(list((out / "generated" / name).glob("*.wav"))) == 4
    assert "chroma_gap" in r["real"]["context_agreement"]
    # per instrument class: only classes with 2+ triples, as many stems as the triples hold
    by = r["real"]["by_instrument"]
    assert all(b["n"] >= 2 and 0.0 <= b["silent_fraction"] <= 1.0 and "chroma_gap" in b for b in by.values())
    assert sum(b["n"] for b in by.values()) <= 4
    assert all(set(c["by_instrument"]) == set(by) for c in r["configs"].values())
    assert (out / "results.csv").read_text().startswith("config,mirdd")
    assert "| naive |" in (out / "results.md").read_text()
    assert (out / "metrics_by_setting.png").exists() and (out / "histograms_naive.png").exists()
    # a rerun reuses the cached generations and gives the same numbers
    stamps = {p: p.stat().st_mtime_ns for p in (out / "generated").rglob("*.wav")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "generated").rglob("*.wav")}
    assert json.loads((out / "results.json").read_text())["configs"]["best"]["mirdd"]["mirdd"] == r["configs"]["best"]["mirdd"]["mirdd"]
    # a stem lost from the middle of a batch comes back the same: triple i always has seed + i
    import soundfile as sf

    lost = out / "generated" / "best" / "0001.wav"
    before, _ = sf.read(lost)
    lost.unlink()
    assert main(args) == 0
    np.testing.assert_array_equal(sf.read(lost)[0], before)
    # stems cached under other settings (a model whose recorded default changed) are generated again
    record = out / "generated" / "best" / "settings.json"
    asked = json.loads(record.read_text())
    assert asked["settings"] and all(s["steps"] == [2, 2, 1, 1] for s in asked["settings"].values())
    record.write_text(json.dumps({**asked, "settings": {k: {**v, "temperature": [0.5] * 4}
                                                         for k, v in asked["settings"].items()}}))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "generated").rglob("*.wav")}
    assert main(args) == 0
    again = {p: p.stat().st_mtime_ns for p in (out / "generated").rglob("*.wav")}
    assert all((again[p] != t) == (p.parent.name == "best") for p, t in stamps.items())
    assert json.loads(record.read_text()) == asked
    np.testing.assert_array_equal(sf.read(lost)[0], before)


def test_agreement_by_instrument_separates_the_classes():
    from stemgen.eval.suite import Scorer
    from stemgen.instruments import resolve

    sr = 16000
    t = np.arange(sr) / sr
    bass, drums, piano = resolve("bass").id, resolve("drums").id, resolve("piano").id

    def tone(f):
        return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)

    contexts = [tone(f) for f in (220.0, 330.0, 247.0, 262.0, 294.0)]
    stems = [tone(110.0), tone(165.0), np.zeros(sr, np.float32), np.zeros(sr, np.float32), tone(147.0)]
    by = Scorer(None, beats=False).by_instrument(stems, contexts, [bass, bass, drums, drums, piano], sr)
    assert set(by) == {"bass", "drums"}  # a class with one stem has no mismatched context: left out
    assert by["bass"]["n"] == 2 and by["bass"]["silent_fraction"] == 0.0
    assert by["drums"]["silent_fraction"] == 1.0 and by["drums"]["chroma_heard"] == 0.0
    # each bass is an octave below its own context: full agreement, less with the other's
    assert by["bass"]["chroma"] > 0.9 and by["bass"]["chroma_gap"] > 0.5


def _tones(folder, names, sr, seed):
    """Short harmonic tones (1.5 s, a random pitch each) written as WAV files ``folder/NAME``."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir()
    t = np.arange(int(1.5 * sr)) / sr
    for name in names:
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        wav = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3)) * np.minimum(1.0, 4 * (1.5 - t))
        sf.write(folder / name, wav.astype(np.float32), sr)


@pytest.mark.slow
def test_any_two_folders_are_scored_as_populations(tmp_path):
    from stemgen.cli import main
    from stemgen.eval.suite import score_folders

    sr = 32000
    real, gen, ctx = tmp_path / "real", tmp_path / "gen", tmp_path / "ctx"
    _tones(real, ["take_0.wav", "take_1.wav", "b.wav"], sr, 0)
    _tones(gen, ["b.wav", "c.wav"], sr, 1)  # populations: the file names need not match
    assert main(["bench", "folders", str(real), str(gen), "--out", str(tmp_path / "folders"), "--rounds", "10"]) == 0
    f = json.loads((tmp_path / "folders" / "results.json").read_text())
    assert f["n_real"] == 3 and f["n_generated"] == 2 and np.isfinite(f["mirdd"]["mirdd"])
    assert "context_agreement_generated" not in f and "context" in f["not_computed"]["context_agreement"]
    assert f["fad_vggish"] is None and "fad_vggish" in f["not_computed"]
    # with contexts, each stem is paired with the context of its own name; agreement for both
    _tones(ctx, ["take_0.wav", "take_1.wav", "b.wav", "c.wav"], sr, 2)
    assert main(["bench", "folders", str(real), str(gen), "--context", str(ctx), "--rounds", "10",
                 "--out", str(tmp_path / "paired")]) == 0
    f = json.loads((tmp_path / "paired" / "results.json").read_text())
    assert {"chroma", "chroma_gap"} <= set(f["context_agreement_generated"]) & set(f["context_agreement_real"])
    assert "context_agreement" not in f["not_computed"]
    (ctx / "take_0.wav").unlink()
    with pytest.raises(ValueError, match="take_0.wav"):
        score_folders(real, gen, ctx, rounds=10)
