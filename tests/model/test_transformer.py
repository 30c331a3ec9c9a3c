import pytest
import torch

from stemgen.instruments import NULL_ID
from stemgen.model import PRESETS, ModelConfig, StemGenModel


def tiny(**kw):
    torch.manual_seed(0)
    return StemGenModel(ModelConfig.from_name("tiny", cardinality=32, **kw)).eval()


def tokens(b=2, q=4, t=12, v=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(v, (b, q, t), generator=g)


def test_shapes_and_level_heads():
    m = tiny()
    ctx, tgt = tokens(), tokens(seed=1)
    inst = torch.tensor([4, NULL_ID])
    logits = m(ctx, tgt, inst)
    assert logits.shape == (2, 4, 12, 32)
    assert torch.allclose(m(ctx, tgt, inst, level=2), logits[:, 2], atol=1e-5)
    h = m.hidden(ctx, tgt, inst)
    levels = torch.tensor([3, 1])
    expected = torch.stack([logits[0, 3], logits[1, 1]])  # (B, T, V): each example's own level
    assert torch.allclose(m.level_logits(h, levels), expected, atol=1e-5)


def test_mask_id_is_accepted_on_the_target_only():
    m = tiny()
    tgt = torch.full((1, 4, 5), m.cfg.mask_id)
    assert torch.isfinite(m(tokens(1, t=5), tgt, torch.tensor([0]))).all()
    with pytest.raises(IndexError):
        m(tgt, tgt, torch.tensor([0]))


def test_attention_is_bidirectional_and_position_aware():
    m = tiny()
    ctx, tgt, inst = tokens(1), tokens(1, seed=1), torch.tensor([3])
    base = m(ctx, tgt, inst)
    later = ctx.clone()
    later[0, 0, -1] = (later[0, 0, -1] + 1) % 32
    assert not torch.allclose(m(later, tgt, inst)[:, :, 0], base[:, :, 0])  # the past sees the future
    flipped = m(ctx.flip(-1), tgt.flip(-1), inst).flip(2)
    assert not torch.allclose(flipped, base, atol=1e-4)  # rotary: order matters


def test_null_context_ignores_the_context():
    m = tiny()
    tgt, inst, drop = tokens(2, seed=1), torch.tensor([1, 2]), torch.tensor([True, False])
    a = m(tokens(2, seed=5), tgt, inst, drop_context=drop)
    b = m(tokens(2, seed=6), tgt, inst, drop_context=drop)
    assert torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_no_biases_and_presets():
    m = tiny()
    assert not [n for n, _ in m.named_parameters() if n.endswith("bias")]
    assert set(PRESETS) >= {"tiny", "small", "paper"}
    with pytest.raises(ValueError, match="tiny"):
        ModelConfig.from_name("huge")


def test_paper_preset_has_about_250m_parameters():
    with torch.device("meta"):
        m = StemGenModel(ModelConfig.from_name("paper"))
    n = m.num_parameters()
    assert abs(n - 250e6) / 250e6 < 0.10, n
    cfg = m.cfg
    assert (cfg.dim, cfg.n_heads, cfg.n_layers, cfg.num_levels, cfg.cardinality) == (1024, 16, 20, 4, 2048)


def test_shared_embeddings_give_a_code_one_vector_in_both_channels():
    import torch

    from stemgen.model import ModelConfig, StemGenModel

    torch.manual_seed(0)
    cfg = ModelConfig.from_name("tiny", cardinality=16, shared_embeddings=True)
    m = StemGenModel(cfg)
    assert not hasattr(m, "target_embed") and m.mask_embed.shape == (4, 32)
    tokens = torch.randint(16, (2, 4, 6))
    e = m.embed(tokens, tokens, torch.tensor([17, 17]))  # null instrument: its embedding is in both halves
    torch.testing.assert_close(e[..., :32], e[..., 32:])  # the same audio means the same in both channels
    masked = tokens.clone()
    masked[:, 2:] = cfg.mask_id
    e2 = m.embed(tokens, masked, torch.tensor([17, 17]))
    assert not torch.allclose(e2[..., 32:], e[..., 32:])
    logits = m(tokens, masked, torch.tensor([4, 16]))
    assert logits.shape == (2, 4, 6, 16) and torch.isfinite(logits).all()
    assert m.num_parameters() < StemGenModel(ModelConfig.from_name("tiny", cardinality=16)).num_parameters()


def test_matmul_weights_in_bf16_give_the_same_logits_under_autocast():
    m = tiny()
    ctx, tgt, inst = tokens(), tokens(seed=1), torch.tensor([4, NULL_ID])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = m(ctx, tgt, inst, level=1)
        m.cast_matmul_weights(torch.bfloat16)
        after = m(ctx, tgt, inst, level=1)
    assert m.heads.dtype == m.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert m.context_embed[0].weight.dtype == m.norm.weight.dtype == torch.float32
    assert torch.equal(before, after)


def test_rotary_tables_are_kept_as_unsaved_buffers_and_extended_past_them(monkeypatch):
    from stemgen.model import transformer

    cfg = ModelConfig(num_levels=2, cardinality=16, dim=32, n_heads=4, n_layers=1)
    model = StemGenModel(cfg)
    hd = cfg.dim // cfg.n_heads
    for frames in (1, 37, transformer.ROPE_CACHE_FRAMES):
        cos, sin = model.rotary(frames)
        ref_cos, ref_sin = transformer.rotary_tables(frames, hd, cfg.rope_base, "cpu")
        assert cos.dtype == torch.float32 and torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
    # not in the state dict: checkpoints written before the cache load as they are, and stay small
    assert not any(k.startswith("rope_") for k in model.state_dict())
    StemGenModel(cfg).load_state_dict(model.state_dict(), strict=True)
    # a module cast to half keeps float32 tables for the rotation
    assert model.half().rotary(5)[0].dtype == torch.float32
    # inputs longer than the cache: computed, and the same output as from cached tables
    monkeypatch.setattr(transformer, "ROPE_CACHE_FRAMES", 8)
    short = StemGenModel(cfg).eval()
    monkeypatch.setattr(transformer, "ROPE_CACHE_FRAMES", 4096)
    cached = StemGenModel(cfg).eval()
    cached.load_state_dict(short.state_dict())
    assert short.rope_cos.shape[0] == 8 and cached.rope_cos.shape[0] == 4096
    ctx, tgt, inst = torch.randint(0, 16, (1, 2, 12)), torch.randint(0, 17, (1, 2, 12)), torch.tensor([3])
    with torch.no_grad():
        assert torch.equal(short(ctx, tgt, inst), cached(ctx, tgt, inst))


@pytest.mark.parametrize("shared", [True, False])
def test_codebook_init_embeds_codes_by_one_linear_map_of_their_vectors(shared):
    cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=16, shared_embeddings=shared)
    model = StemGenModel(cfg)
    g = torch.Generator().manual_seed(0)
    books = torch.randn(2, 16, 40, generator=g)
    books[0, 2] = books[0, 0] + books[0, 1]  # a code that is the sum of two others
    books[1, 5] = books[0, 3]  # the same vector on another level
    mask_before = None if shared else model.target_embed[0].weight[16].clone()
    heads_before = model.heads.detach().clone()
    model.init_embeddings_from_codebooks(books)
    assert torch.equal(model.heads, heads_before)  # the heads only on request
    tables = [model.context_embed[q].weight.detach() for q in range(2)]  # (V, D/2) each
    torch.testing.assert_close(tables[0][2], tables[0][0] + tables[0][1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tables[1][5], tables[0][3], atol=1e-6, rtol=1e-5)
    assert abs(torch.cat(tables).std().item() - 0.02) < 0.005
    # 40-dim vectors into D/2 = 32 dims: the map keeps the top 32 directions, distinct codes stay apart
    assert torch.cdist(tables[0], tables[0]).fill_diagonal_(1.0).min() > 1e-3
    if not shared:
        for q in range(2):
            torch.testing.assert_close(model.target_embed[q].weight[:16], tables[q])
        assert torch.equal(model.target_embed[0].weight[16], mask_before)  # MASK keeps its init
    model.init_embeddings_from_codebooks(books, heads=True)
    rows = model.heads.detach()  # (Q, V, D): D = 64 > the 32 vectors' rank: 32 mapped dims, the rest as before
    torch.testing.assert_close(rows[0, 2, :32], rows[0, 0, :32] + rows[0, 1, :32], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rows[1, 5, :32], rows[0, 3, :32], atol=1e-6, rtol=1e-5)
    assert torch.equal(rows[..., 32:], heads_before[..., 32:])
    with pytest.raises(ValueError, match="do not fit a model of 2 levels x 16 codes"):
        model.init_embeddings_from_codebooks(torch.randn(4, 16, 40))


def test_codebook_init_from_the_embedded_codec_puts_alike_codes_near():
    from stemgen.codec.embedded import EmbeddedCodec, EmbeddedCodecConfig

    codec = EmbeddedCodec(EmbeddedCodecConfig(num_levels=2, cardinality=16), torch.randn(2, 16, 1025))
    model = StemGenModel(ModelConfig.from_name("tiny", num_levels=2, cardinality=16, shared_embeddings=True))
    model.init_embeddings_from_codebooks(codec.codebook_vectors())
    books, table = codec.codebook_vectors()[0], model.context_embed[0].weight.detach()
    # its 32 codebook vectors span at most 32 of the 1025 dimensions: the map to D/2 = 32 keeps
    # them whole, every distance scaled by one factor
    d_books, d_table = torch.cdist(books, books), torch.cdist(table, table)
    ratio = d_table[d_books > 0] / d_books[d_books > 0]
    assert ratio.std() / ratio.mean() < 1e-3


def test_codebook_features_embed_each_code_by_a_learned_map_of_its_codec_vector():
    cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=16, shared_embeddings=True, codebook_dim=8)
    torch.manual_seed(0)
    model = StemGenModel(cfg)
    books = torch.randn(2, 16, 40, generator=torch.Generator().manual_seed(0))
    books[1, 7] = books[1, 6]  # two codes the codec cannot tell apart
    model.set_codebook_features(books)
    feats = model.codebook_features
    assert feats.shape == (2, 16, 8) and torch.equal(feats[1, 7], feats[1, 6])
    assert "codebook_features" in model.state_dict()  # kept with the weights
    # one shared map: the context channel's embedding moves with the projection of the features
    ctx = torch.randint(16, (1, 2, 5), generator=torch.Generator().manual_seed(1))
    tgt = torch.full_like(ctx, cfg.mask_id)
    inst = torch.tensor([3])
    base = model.embed(ctx, tgt, inst)
    with torch.no_grad():
        model.codebook_proj.weight.mul_(2.0)
    moved = model.embed(ctx, tgt, inst)
    want = model.codebook_proj((feats[0][ctx[:, 0]] + feats[1][ctx[:, 1]])) / 2.0
    torch.testing.assert_close((moved - base)[..., :32], want, atol=1e-6, rtol=1e-5)
    # a masked target adds no codec features; a decoded one does
    assert torch.equal((moved - base)[..., 32:], torch.zeros_like(base[..., 32:]))
    decoded = model.embed(ctx, ctx, inst)
    assert not torch.allclose(decoded[..., 32:], moved[..., 32:])
    # the map is learned
    model(ctx, ctx, inst, level=0).sum().backward()
    assert model.codebook_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no codec features"):
        StemGenModel(ModelConfig.from_name("tiny", num_levels=2, cardinality=16)).set_codebook_features(books)


def test_codebook_heads_add_a_learned_reading_of_each_codes_features_on_every_path():
    cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=16, codebook_dim=8, codebook_heads=True)
    torch.manual_seed(0)
    model = StemGenModel(cfg).set_codebook_features(torch.randn(2, 16, 40, generator=torch.Generator().manual_seed(0)))
    ctx = torch.randint(16, (3, 2, 5), generator=torch.Generator().manual_seed(1))
    inst = torch.tensor([3, 4, 5])
    with torch.no_grad():
        h = model.hidden(ctx, ctx, inst)
        want = torch.stack([h @ model.heads[q].T + model.codebook_out(h) @ model.codebook_features[q].T
                            for q in range(2)], 1)  # (B, Q, T, V)
        torch.testing.assert_close(model(ctx, ctx, inst), want)
        for q in range(2):
            torch.testing.assert_close(model(ctx, ctx, inst, level=q), want[:, q])
            torch.testing.assert_close(model(ctx, ctx, inst, level=torch.tensor(q)), want[:, q])
        levels = torch.tensor([1, 0, 1])
        torch.testing.assert_close(model.level_logits(h, levels), want[torch.arange(3), levels])
        # the features matter: zero them and the logits are the tables' alone
        model.codebook_features.zero_()
        torch.testing.assert_close(model(ctx, ctx, inst, level=0), model.hidden(ctx, ctx, inst) @ model.heads[0].T)
    with pytest.raises(ValueError, match="set codebook_dim > 0"):
        StemGenModel(ModelConfig.from_name("tiny", codebook_heads=True))


def test_residual_dropout_acts_in_training_only_and_keeps_the_weights_shape():
    plain, dropping = tiny(), tiny(dropout=0.5)
    assert plain.state_dict().keys() == dropping.state_dict().keys()
    dropping.load_state_dict(plain.state_dict())
    ctx, tgt, inst = tokens(), tokens(seed=1), torch.tensor([4, 2])
    want = plain(ctx, tgt, inst)
    torch.testing.assert_close(dropping(ctx, tgt, inst), want, rtol=0, atol=0)  # eval: never drops
    dropping.train()
    torch.manual_seed(1)
    first = dropping(ctx, tgt, inst)
    torch.manual_seed(1)
    again = dropping(ctx, tgt, inst)
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # the masks come from the global RNG
    assert (first - want).abs().max() > 1e-3
    assert not torch.equal(first, dropping(ctx, tgt, inst))  # another draw, another mask
    plain.train()
    torch.testing.assert_close(plain(ctx, tgt, inst), want, rtol=0, atol=0)  # 0: off in training too
    with pytest.raises(ValueError, match="dropout 1.0 must be in"):
        tiny(dropout=1.0)


def test_context_chroma_is_one_more_context_row_read_with_the_context_and_dropped_with_it():
    m = tiny(context_chroma=True)
    assert m.cfg.context_rows == 5 and tiny().cfg.context_rows == 4
    g = torch.Generator().manual_seed(3)
    chroma = torch.randint(4 ** 12, (2, 1, 12), generator=g)
    other = torch.randint(4 ** 12, (2, 1, 12), generator=g)
    ctx, tgt, inst = tokens(2), tokens(2, seed=1), torch.tensor([1, 2])
    a = m(torch.cat([ctx, chroma], 1), tgt, inst)
    assert a.shape == (2, 4, 12, 32)
    assert not torch.allclose(a, m(torch.cat([ctx, other], 1), tgt, inst))  # the profile is read
    drop = torch.tensor([True, False])
    da = m(torch.cat([ctx, chroma], 1), tgt, inst, drop_context=drop)
    db = m(torch.cat([ctx, other], 1), tgt, inst, drop_context=drop)
    assert torch.allclose(da[0], db[0]) and not torch.allclose(da[1], db[1])  # dropped with the context
    # a code is read as its pitch classes' steps: the embedding is the sum of one vector per class
    steps = torch.tensor([[0, 3, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0]])
    code = (steps * 4 ** torch.arange(12)).sum(-1)  # (1,)
    row = torch.cat([tokens(1, t=1), code.view(1, 1, 1)], 1)
    expected = m.chroma_embed.weight[torch.arange(12) * 4 + steps[0]].sum(0)
    assert torch.allclose(m._chroma(row)[0, 0], expected)
    with pytest.raises(ValueError, match="needs 5 rows"):
        m(ctx, tgt, inst)
