"""Ensembles: combining the members' distributions, the export format, loading and generating."""

import dataclasses
from dataclasses import replace
import json
import math

import numpy as np
import pytest
import torch

from stemgen.cli import main
from stemgen.errors import CheckpointError
from stemgen.model import ModelConfig, StemGenModel
from stemgen.model.ensemble import EnsembleModel, combine_log_probs
from stemgen.model.io import ModelRecord, load_exported, save_ensemble, save_exported

from ..conftest import SR, melody


def _tiny(seed, **kw):
    torch.manual_seed(seed)
    return StemGenModel(ModelConfig.from_name("tiny", **{"cardinality": 64, **kw})).eval()


def _inputs(cfg, b=2, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, cfg.cardinality, (b, cfg.num_levels, t), generator=g)
    tgt = torch.randint(0, cfg.cardinality, (b, cfg.num_levels, t), generator=g)
    tgt[:, 1:] = cfg.mask_id
    tgt[:, 0, ::2] = cfg.mask_id
    return ctx, tgt, torch.tensor([1, 3])


def test_mixture_is_the_mean_probability_and_product_the_normalised_geometric_mean():
    a = torch.tensor([[2.0, 0.0, -1.0]])
    b = torch.tensor([[0.0, 1.0, 3.0]])
    pa, pb = a.softmax(-1), b.softmax(-1)
    mix = combine_log_probs([a, b], "mixture")
    torch.testing.assert_close(mix.exp(), (pa + pb) / 2)
    geo = (pa * pb).sqrt()
    torch.testing.assert_close(combine_log_probs([a, b], "product").exp(), geo / geo.sum(-1, keepdim=True))
    # where one member rules a code out, the product does too; the mixture keeps half its mass
    c, d = torch.tensor([[0.0, -30.0]]), torch.tensor([[0.0, 0.0]])
    assert combine_log_probs([c, d], "product").exp()[0, 1] < 1e-6 < 0.2 < combine_log_probs([c, d], "mixture").exp()[0, 1]
    for combine in ("mixture", "product"):
        same = combine_log_probs([a, a, a], combine)  # identical members: the member itself
        torch.testing.assert_close(same, a.log_softmax(-1))
        assert torch.logsumexp(combine_log_probs([a, b], combine), -1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_log_probs([a], "mean")


def test_one_member_ensemble_is_the_member_and_the_scoring_path_matches_forward():
    m1, m2 = _tiny(0), _tiny(1)
    ctx, tgt, inst = _inputs(m1.cfg)
    with torch.no_grad():
        alone = EnsembleModel([m1])
        assert torch.equal(alone(ctx, tgt, inst, level=0), m1(ctx, tgt, inst, level=0))  # the member's own logits
        ens = EnsembleModel([m1, m2], "mixture")
        full = ens(ctx, tgt, inst)  # (B, Q, T, V)
        assert full.shape == (2, m1.cfg.num_levels, 12, 64)
        expect = torch.logsumexp(torch.stack([m1(ctx, tgt, inst).log_softmax(-1),
                                              m2(ctx, tgt, inst).log_softmax(-1)]), 0) - math.log(2)
        torch.testing.assert_close(full, expect)
        # a 0-dim level (the compiled sampler's) and the loss's per-example levels give the same
        torch.testing.assert_close(ens(ctx, tgt, inst, level=torch.tensor(1)), full[:, 1])
        level = torch.tensor([0, 2])
        scored = ens.level_logits(ens.hidden(ctx, tgt, inst), level)
        torch.testing.assert_close(scored, torch.stack([full[0, 0], full[1, 2]]))
        # the members disagree, so the ensemble differs from each
        assert not torch.allclose(full, m1(ctx, tgt, inst).log_softmax(-1), atol=1e-3)
    assert ens.cfg is m1.cfg and ens.num_parameters() == 2 * m1.num_parameters()


def test_members_must_read_the_same_tokens():
    with pytest.raises(ValueError, match="cardinality 32 vs 64"):
        EnsembleModel([_tiny(0), StemGenModel(ModelConfig.from_name("tiny", cardinality=32))])
    # a member that reads the context's chroma row reads another context than one that does not
    chroma = StemGenModel(replace(_tiny(0).cfg, context_chroma=True))
    with pytest.raises(ValueError, match="context_chroma True vs False"):
        EnsembleModel([_tiny(0), chroma])
    with pytest.raises(ValueError, match="at least one"):
        EnsembleModel([])
    with pytest.raises(ValueError, match="combine must be one of"):
        EnsembleModel([_tiny(0)], "vote")
    EnsembleModel([_tiny(0), _tiny(1, dim=32, n_heads=2)])  # other shapes, one contract: fine


def _export(folder, model, codec, window=0.5, sampling=None, fingerprint=None):
    codec.save(folder / "codec")
    record = ModelRecord.for_codec(model.cfg, codec, "codec", window)
    if fingerprint:
        record.codec["fingerprint"] = fingerprint
    record.sampling = dict(sampling or {})
    save_exported(model, folder, record, {"global_step": 7}, half=True)
    return folder


def test_ensemble_export_roundtrip_and_generation(tmp_path, tiny_codec):
    import stemgen
    from stemgen.api import load_model

    m1, m2 = _tiny(0, cardinality=tiny_codec.cardinality), _tiny(1, cardinality=tiny_codec.cardinality)
    a = _export(tmp_path / "a", m1, tiny_codec, sampling={"guidance_form": "nested"})
    b = _export(tmp_path / "b", m2, tiny_codec)
    assert main(["ensemble", str(tmp_path / "ens"), json.dumps([str(a), str(b)]), "--combine", "product"]) == 0
    ens, record, info = load_exported(tmp_path / "ens")
    assert isinstance(ens, EnsembleModel) and ens.combine == "product" and len(ens.members) == 2
    assert record.sampling == {"guidance_form": "nested"} and record.window_seconds == 0.5  # the first member's
    assert info["members"]["member-2"]["joined_from"] == str(b) and info["members"]["member-1"]["global_step"] == 7
    loaded = [load_exported(a)[0], load_exported(b)[0]]
    for mine, theirs in zip(ens.members, loaded):
        assert all(torch.equal(mine.state_dict()[k], v) for k, v in theirs.state_dict().items())
    ctx, tgt, inst = _inputs(m1.cfg)
    with torch.no_grad():
        torch.testing.assert_close(ens(ctx, tgt, inst, level=0),
                                   combine_log_probs([m(ctx, tgt, inst, level=0) for m in loaded], "product"))

    sm = load_model(tmp_path / "ens", device="cpu", precision="fp32")
    assert sm.model.num_parameters() == 2 * m1.num_parameters()
    assert sm.default_settings.guidance_form == "nested"
    context = melody([60, 64, 67, 72], sr=SR)  # 1 s
    one = stemgen.generate(context, "bass", model=sm, sample_rate=SR, steps=(3, 2, 2, 1), seed=0)
    two = stemgen.generate(context, "bass", model=sm, sample_rate=SR, steps=(3, 2, 2, 1), seed=0)
    assert one.audio.shape == (SR,) and np.isfinite(one.audio).all()
    assert np.array_equal(one.tokens, two.tokens)  # seeded: the ensemble samples reproducibly
    # a rewrite replaces the old members, and an ensemble written where a single model was leaves no stale weights
    save_ensemble([a], tmp_path / "ens")
    assert not (tmp_path / "ens" / "member-2").exists() and len(load_exported(tmp_path / "ens")[0].members) == 1
    c = _export(tmp_path / "c", m1, tiny_codec)
    save_ensemble([a, b], c)
    assert not (c / "model.safetensors").exists() and sorted(p.name for p in c.iterdir()) == [
        "codec", "config.json", "member-1", "member-2"]


def test_ensemble_errors_name_the_problem(tmp_path, tiny_codec):
    m1 = _tiny(0, cardinality=tiny_codec.cardinality)
    a = _export(tmp_path / "a", m1, tiny_codec)
    other = _export(tmp_path / "other", _tiny(1, cardinality=tiny_codec.cardinality), tiny_codec,
                    fingerprint="0" * 16)
    with pytest.raises(CheckpointError, match="another codec's tokens"):
        save_ensemble([a, other], tmp_path / "ens")
    longer = _export(tmp_path / "longer", _tiny(1, cardinality=tiny_codec.cardinality), tiny_codec, window=1.0)
    with pytest.raises(CheckpointError, match="one window length"):
        save_ensemble([a, longer], tmp_path / "ens")
    with pytest.raises(ValueError, match="inside the output folder"):
        save_ensemble([a], tmp_path)
    save_ensemble([a], tmp_path / "ens")
    with pytest.raises(CheckpointError, match="itself an ensemble"):
        save_ensemble([tmp_path / "ens"], tmp_path / "ens2")
    cfg = json.loads((tmp_path / "ens" / "config.json").read_text())
    cfg["ensemble"]["members"] = ["../a"]  # a member must be a folder of the export, never a path elsewhere
    (tmp_path / "ens" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a folder of the export"):
        load_exported(tmp_path / "ens")
    cfg["ensemble"] = {"members": []}
    (tmp_path / "ens" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="without a valid member list"):
        load_exported(tmp_path / "ens")


def test_a_corrupt_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_exported(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="no stemgen model record"):
        load_exported(tmp_path)


def test_members_without_their_codec_take_one_given_and_checked(tmp_path, tiny_codec):
    """A GPU run's export comes back without its codec/: an ensemble of such members asks for the
    codec folder, checks it against the members' record, and bundles it; loading such a member alone
    says what is missing instead of looking for EnCodec."""
    import shutil

    from stemgen.api import load_model
    from stemgen.errors import MissingWeightsError

    bare = []
    for k in range(2):
        folder = _export(tmp_path / f"m{k}", _tiny(k, cardinality=tiny_codec.cardinality), tiny_codec)
        shutil.rmtree(folder / "codec")
        bare.append(folder)
    with pytest.raises(MissingWeightsError, match="exported with its codec in"):
        load_model(bare[0], device="cpu")
    with pytest.raises(CheckpointError, match="none of the members carries the codec"):
        save_ensemble(bare, tmp_path / "ens")
    assert not (tmp_path / "ens" / "config.json").exists()
    tiny_codec.save(tmp_path / "the_codec")
    assert main(["ensemble", str(tmp_path / "ens"), json.dumps([str(p) for p in bare]),
                 "--codec", str(tmp_path / "the_codec")]) == 0
    model = load_model(tmp_path / "ens", device="cpu", precision="fp32")
    assert model.codec.fingerprint() == tiny_codec.fingerprint() and len(model.model.members) == 2
    # a member that bundles its codec is enough: its codec/ is taken
    whole = _export(tmp_path / "whole", _tiny(2, cardinality=tiny_codec.cardinality), tiny_codec)
    save_ensemble([bare[0], whole], tmp_path / "ens2")
    assert load_model(tmp_path / "ens2", device="cpu").codec.fingerprint() == tiny_codec.fingerprint()
    # a codec other than the members' is refused, and so is a folder that holds none
    other = _export(tmp_path / "other", _tiny(3, cardinality=tiny_codec.cardinality), tiny_codec,
                    fingerprint="0" * 16)
    shutil.rmtree(other / "codec")
    with pytest.raises(CheckpointError, match="do not match"):
        save_ensemble([other], tmp_path / "ens3", codec=tmp_path / "the_codec")
    with pytest.raises(ValueError, match="inside the output folder"):
        save_ensemble(bare, tmp_path / "ens", codec=tmp_path / "ens" / "codec")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a codec folder"):
        save_ensemble(bare, tmp_path / "ens3", codec=tmp_path / "empty")


def test_an_instrument_routed_to_some_members_is_generated_by_them_alone(tmp_path, tiny_codec):
    """``instrument_members``: the drums from member 1 alone (the product of members sharpens the
    drums' silence), the bass from both: every forward pass of a drum stem is member 1's, and its
    tokens are those of member 1 exported alone; the export keeps the routing."""
    import stemgen
    from stemgen.api import load_model
    from stemgen.instruments import resolve

    m1, m2 = _tiny(0, cardinality=tiny_codec.cardinality), _tiny(1, cardinality=tiny_codec.cardinality)
    a, b = _export(tmp_path / "a", m1, tiny_codec), _export(tmp_path / "b", m2, tiny_codec)
    assert main(["ensemble", str(tmp_path / "ens"), json.dumps([str(a), str(b)]), "--combine", "product",
                 "--instrument_members", '{"Drums": [1]}']) == 0
    assert json.loads((tmp_path / "ens" / "config.json").read_text())["ensemble"]["instruments"] == {
        "drums": ["member-1"]}
    sm = load_model(tmp_path / "ens", device="cpu", precision="fp32")
    drums = resolve("drums").id
    assert sm.model.routes == {drums: (0,)}
    sub = sm.model.for_instrument(drums)
    assert len(sub.members) == 1 and sub.members[0] is sm.model.members[0]  # shared, not copied
    assert sm.model.for_instrument(resolve("bass").id) is sm.model
    calls = [0, 0]
    hooks = [m.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, m in enumerate(sm.model.members)]
    context = melody([60, 64, 67, 72], sr=SR)
    kw = dict(sample_rate=SR, steps=(3, 2, 2, 1), seed=0)
    stems = stemgen.generate([context, context], ["drums", "bass"], model=sm, **kw)
    assert calls[0] > calls[1] > 0  # the drums called member 1 only, the bass both
    for h in hooks:
        h.remove()
    alone = stemgen.generate(context, "drums", model=load_model(a, device="cpu", precision="fp32"), **kw)
    assert np.array_equal(stems[0].tokens, alone.tokens)
    with pytest.raises(ValueError, match="distinct member numbers from 1 to 2"):
        save_ensemble([a, b], tmp_path / "bad", instrument_members={"drums": [3]})
    with pytest.raises(ValueError, match="instrument_members"):
        save_ensemble([a, b], tmp_path / "bad", instrument_members={"kazoo": [1]})
    cfg = json.loads((tmp_path / "ens" / "config.json").read_text())
    cfg["ensemble"]["instruments"] = {"drums": ["member-9"]}
    (tmp_path / "ens" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="instrument members"):
        load_exported(tmp_path / "ens")


def test_null_instrument_members_answer_the_instrument_free_rows_alone(monkeypatch):
    """``null_members``: rows whose instrument is NULL_ID (the branches p(t|a), p(t)) come from
    those members, every other row from the rest; a batch without such rows never runs them."""
    from stemgen.instruments import NULL_ID

    m1, m2, m3 = _tiny(0), _tiny(1), _tiny(2)
    cfg = m1.cfg
    g = torch.Generator().manual_seed(3)
    ctx = torch.randint(0, cfg.cardinality, (4, cfg.num_levels, 12), generator=g)
    tgt = torch.full_like(ctx, cfg.mask_id)
    inst = torch.tensor([1, NULL_ID, 3, NULL_ID])
    drop = torch.tensor([False, False, True, True])
    ens = EnsembleModel([m1, m2], null_members=[1])
    assert ens.main_members == (0,) and ens.null_members == (1,)
    with torch.no_grad():
        out = ens(ctx, tgt, inst, drop, level=0)  # (B, T, V)
        own, branch = m1(ctx, tgt, inst, drop, level=0), m2(ctx, tgt, inst, drop, level=0)
        torch.testing.assert_close(out[[0, 2]], own[[0, 2]])
        torch.testing.assert_close(out[[1, 3]], branch[[1, 3]])
        assert not torch.allclose(own[[1, 3]], branch[[1, 3]], atol=1e-3)  # the members differ there
        # the scoring path (per-example levels) and the compiled path (both sets, row by row) agree
        level = torch.tensor([0, 2, 1, 0])
        full = ens(ctx, tgt, inst, drop)  # (B, Q, T, V)
        scored = ens.level_logits(ens.hidden(ctx, tgt, inst, drop), level)
        torch.testing.assert_close(scored, full[torch.arange(4), level])
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        torch.testing.assert_close(ens(ctx, tgt, inst, drop, level=0), out)
        monkeypatch.undo()
        calls = []
        hook = m2.register_forward_hook(lambda *_: calls.append(1))
        conditioned = ens(ctx[[0, 2]], tgt[[0, 2]], inst[[0, 2]], drop[[0, 2]], level=0)
        assert calls == [] and torch.equal(conditioned, own[[0, 2]])  # exactly the conditioned member
        ens(ctx[[1]], tgt[[1]], inst[[1]], level=0)
        assert calls == [1]
        hook.remove()
        # the scoring path too runs only the set a batch needs, and scores as forward does
        h = ens.hidden(ctx[[0, 2]], tgt[[0, 2]], inst[[0, 2]], drop[[0, 2]])
        assert h[1][1] is None and h[1][0] is not None
        torch.testing.assert_close(ens.level_logits(h, torch.zeros(2, dtype=torch.long)), own[[0, 2]])
        h = ens.hidden(ctx[[1, 3]], tgt[[1, 3]], inst[[1, 3]], drop[[1, 3]])
        assert h[1][0] is None and h[1][1] is not None
        torch.testing.assert_close(ens.level_logits(h, torch.zeros(2, dtype=torch.long)), branch[[1, 3]])
    # routes choose among the conditioned members; the null-instrument ones stay with every instrument
    # a sampler that never asks those rows is given the ensemble without them
    plain = ens.conditioned()
    assert [id(m) for m in plain.members] == [id(m1)] and plain.null_members == () and plain.conditioned() is plain
    three = EnsembleModel([m1, m2, m3], routes={5: [1]}, null_members=[2])
    sub = three.for_instrument(5)
    assert [id(m) for m in sub.members] == [id(m2), id(m3)] and sub.null_members == (1,) and sub.main_members == (0,)
    assert three.for_instrument(1) is three
    with pytest.raises(ValueError, match="leaving at least one member"):
        EnsembleModel([m1, m2], null_members=[0, 1])
    with pytest.raises(ValueError, match="not the null-instrument members"):
        EnsembleModel([m1, m2], routes={5: [1]}, null_members=[1])


def test_a_null_instrument_member_serves_the_guidance_branch_and_leaves_generation_alone(tmp_path, tiny_codec):
    """The export keeps the null-instrument members; nested guidance with lambda_i = 1 (no
    instrument-free branch run) generates the first member's tokens exactly, paper guidance asks
    the null-instrument member, and the listening measure scores p(t|a) with it."""
    import stemgen
    from stemgen.api import load_model
    from stemgen.model.loss import LISTENING_CONDITIONS, listening_losses
    from stemgen.sampling.settings import SamplingSettings

    m1, m2 = _tiny(0, cardinality=tiny_codec.cardinality), _tiny(1, cardinality=tiny_codec.cardinality)
    a, b = _export(tmp_path / "a", m1, tiny_codec), _export(tmp_path / "b", m2, tiny_codec)
    assert main(["ensemble", str(tmp_path / "ens"), json.dumps([str(a), str(b)]),
                 "--null_instrument_members", "[2]"]) == 0
    assert json.loads((tmp_path / "ens" / "config.json").read_text())["ensemble"]["null_instrument"] == ["member-2"]
    sm = load_model(tmp_path / "ens", device="cpu", precision="fp32")
    assert sm.model.null_members == (1,)
    context = melody([60, 64, 67, 72], sr=SR)
    kw = dict(sample_rate=SR, steps=(3, 2, 2, 1), seed=0)
    calls = []
    hook = sm.model.members[1].register_forward_hook(lambda *_: calls.append(1))
    nested = dataclasses.replace(SamplingSettings.paper(), guidance_form="nested", lambda_instrument=1.0)
    mine = stemgen.generate(context, "bass", model=sm, settings=nested, **kw)
    assert calls == [] and sm.model_for("bass", nested).null_members == ()  # not even handed to the step
    assert sm.model_for("bass", SamplingSettings.paper()) is sm.model
    alone = stemgen.generate(context, "bass", model=load_model(a, device="cpu", precision="fp32"), settings=nested, **kw)
    assert np.array_equal(mine.tokens, alone.tokens)
    stemgen.generate(context, "bass", model=sm, settings=SamplingSettings.paper(), **kw)
    assert calls  # p(t|a) and p(t) asked the branch member
    hook.remove()
    g = torch.Generator().manual_seed(1)
    ctx, tgt = torch.randint(0, tiny_codec.cardinality, (2, 4, sm.model.cfg.num_levels, 12), generator=g)
    inst, songs = torch.tensor([1, 3, 1, 3]), torch.tensor([0, 1, 2, 3])
    sums = {}
    for name, model in (("ens", sm.model), ("a", load_exported(a)[0]), ("b", load_exported(b)[0])):
        s, n = listening_losses(model, ctx, tgt, inst, songs, torch.Generator().manual_seed(0))
        sums[name] = dict(zip(LISTENING_CONDITIONS, (s / n).tolist()))
    for cond in LISTENING_CONDITIONS:
        expect = sums["b"] if cond in ("null_instrument", "null_both") else sums["a"]
        assert sums["ens"][cond] == pytest.approx(expect[cond], rel=1e-5), cond
    with pytest.raises(ValueError, match="null_instrument_members"):
        save_ensemble([a, b], tmp_path / "bad", null_instrument_members=[1, 2])
    with pytest.raises(ValueError, match="do not also name it"):
        save_ensemble([a, b], tmp_path / "bad", instrument_members={"drums": [2]}, null_instrument_members=[2])
    cfg = json.loads((tmp_path / "ens" / "config.json").read_text())
    cfg["ensemble"]["null_instrument"] = ["member-7"]
    (tmp_path / "ens" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="null-instrument members"):
        load_exported(tmp_path / "ens")
