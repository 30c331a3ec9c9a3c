"""The StemGen model: a LLaMA-style bidirectional transformer over paired token channels.

Input per frame t: the Q context tokens ``a[:, t]`` and the Q target tokens ``x[:, t]`` (a
MASK id where not yet known), plus the instrument class of the target. Each channel's
embedding is the sum of one table per level; the instrument embedding is added to both
channels; the two channels (d/2 each) are concatenated into one sequence element, so the
sequence length is T, not 2T. One output head per level gives V logits per position.

Shapes: B batch, Q levels, T frames, V codes, D model width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..instruments import NULL_ID, NUM_INSTRUMENTS
from ..spectra import CHROMA_STEPS, chroma_code_steps
from .attention import fused_applies, reference_attention


@dataclass(frozen=True)
class ModelConfig:
    """Model shape. ``num_levels``/``cardinality`` must match the codec (Q, V).

    ``shared_embeddings``: the target channel reads the context channel's table of each level
    (plus a learned MASK vector per level), so a code means the same vector in both channels from
    the start; ``False`` (the paper's reading) gives each channel its own tables.

    ``codebook_dim``: > 0 adds to every code's embedding, in both channels, a learned linear map
    of what the code stands for in the codec: its codebook vector, reduced to ``codebook_dim``
    dimensions (:meth:`StemGenModel.set_codebook_features`, kept with the weights). Codes that
    sound alike then share what is learned about them, throughout training; 0 (the paper's):
    only the tables. ``codebook_heads`` (needs ``codebook_dim``): the output heads too, each
    code's logit adding a learned reading of its codec features, so that raising one code raises
    the codes that sound like it.

    ``dropout``: the probability of zeroing an element of each block's attention and feed-forward
    output before it joins the residual stream (residual dropout, as in GPT-2 and nanoGPT), in
    training only; a regulariser for small datasets, not part of the model's shape: the same
    weights run with any value, and evaluation and generation never drop. 0 (the paper states
    none): off.

    ``context_chroma``: the context carries one more row after its Q levels, the codes of its
    pitch-class profile per frame (:func:`stemgen.spectra.chroma_codes`, computed from the
    context's audio), embedded as the sum of one learned vector per pitch class and step and
    added to the context channel (dropped with it for guidance). The harmony is then read from
    the audio's spectrum instead of being learned from the codec's codes of whole mixes; False
    (the paper's): the codec's tokens alone.
    """

    num_levels: int = 4
    cardinality: int = 2048
    num_instruments: int = NUM_INSTRUMENTS
    dim: int = 1024
    n_heads: int = 16
    n_layers: int = 20
    ffn_multiple_of: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    shared_embeddings: bool = False
    codebook_dim: int = 0
    codebook_heads: bool = False
    dropout: float = 0.0
    context_chroma: bool = False

    @property
    def context_rows(self) -> int:
        """Rows of the context tensor ``(B, context_rows, T)``: the Q levels, and the chroma codes
        with ``context_chroma``."""
        return self.num_levels + int(self.context_chroma)

    @property
    def mask_id(self) -> int:
        """The target-channel token that means "not decoded yet"."""
        return self.cardinality

    @property
    def ffn_dim(self) -> int:
        """SwiGLU hidden width: 2/3 of 4*D, rounded up to ``ffn_multiple_of`` (as in LLaMA)."""
        hidden = int(2 * 4 * self.dim / 3)
        return self.ffn_multiple_of * math.ceil(hidden / self.ffn_multiple_of)

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ModelConfig":
        """A preset from :data:`PRESETS`, with fields overridden (e.g. the codec's Q and V)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}: one of {', '.join(PRESETS)}.")
        return replace(cls(**PRESETS[name]), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


#: Named shapes: tiny for CPU tests (seconds), small for CPU demos, paper as in the paper.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, n_heads=4, n_layers=2, ffn_multiple_of=32),
    "small": dict(dim=256, n_heads=8, n_layers=6, ffn_multiple_of=64),
    "paper": dict(dim=1024, n_heads=16, n_layers=20, ffn_multiple_of=256),
}


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively (CUDA with bf16; CPUs with AVX512-BF16 or
    AMX). Elsewhere bf16 is emulated: on an AVX2-only CPU a bf16-autocast training step of the
    ``small`` preset measured 30x slower than float32 (37 s against 1.3 s)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


#: frames (82 s at 50 Hz) whose rotary tables a model keeps; longer inputs compute theirs
ROPE_CACHE_FRAMES = 4096


def rotary_tables(t: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape ``(T, head_dim/2)`` for rotary position embedding."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(t, device=device, dtype=torch.float32), inv)
    return angles.cos(), angles.sin()


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, T, 3D)
        if fused and fused_applies(qkv, self.n_heads):
            y = torch.ops.stemgen.rotary_attention(qkv, cos, sin, self.n_heads)
        else:
            y = reference_attention(qkv, cos, sin, self.n_heads)
        return self.out(y)  # (B, T, D)


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, -1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps), RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn, self.ffn = Attention(cfg), SwiGLU(cfg)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, fused: bool = False):
        x = x + self._drop(self.attn(self.attn_norm(x), cos, sin, fused))
        return x + self._drop(self.ffn(self.ffn_norm(x)))

    def _drop(self, y: torch.Tensor) -> torch.Tensor:
        # the branch's output only, so the residual stream itself always passes whole
        return F.dropout(y, self.dropout, self.training) if self.dropout > 0 else y


class StemGenModel(nn.Module):
    """p(target tokens | context tokens, instrument) as a masked-token transformer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.codebook_heads and cfg.codebook_dim <= 0:
            raise ValueError("codebook_heads reads the codec features: set codebook_dim > 0 too.")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"dropout {cfg.dropout} must be in [0, 1): the probability of dropping an element.")
        if cfg.dim % cfg.n_heads or (cfg.dim // cfg.n_heads) % 2 or cfg.n_layers < 1:
            raise ValueError(f"dim {cfg.dim} must be {cfg.n_heads} heads times an even head size, and n_layers "
                             f"({cfg.n_layers}) at least 1.")
        self.cfg = cfg
        half = cfg.dim // 2
        self.context_embed = nn.ModuleList(nn.Embedding(cfg.cardinality, half) for _ in range(cfg.num_levels))
        if cfg.shared_embeddings:
            self.mask_embed = nn.Parameter(torch.zeros(cfg.num_levels, half))  # (Q, D/2)
        else:
            self.target_embed = nn.ModuleList(nn.Embedding(cfg.cardinality + 1, half) for _ in range(cfg.num_levels))
        if cfg.codebook_dim > 0:
            # set from the codec before training (set_codebook_features), saved with the weights
            self.register_buffer("codebook_features", torch.zeros(cfg.num_levels, cfg.cardinality, cfg.codebook_dim))
            self.codebook_proj = nn.Linear(cfg.codebook_dim, half, bias=False)
        if cfg.codebook_heads:
            self.codebook_out = nn.Linear(cfg.dim, cfg.codebook_dim, bias=False)
        if cfg.context_chroma:  # one vector per (pitch class, step): row pc * CHROMA_STEPS + step
            self.chroma_embed = nn.Embedding(12 * CHROMA_STEPS, half)
        self.instrument_embed = nn.Embedding(cfg.num_instruments, half)
        self.null_context = nn.Parameter(torch.zeros(half))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.heads = nn.Parameter(torch.empty(cfg.num_levels, cfg.cardinality, cfg.dim))  # (Q, V, D)
        # The rotary tables as buffers (not saved: they follow from the config), so a compiled
        # forward reads them: computed inside the graph, Inductor recomputes cos/sin inside every
        # layer's rotary kernel (5 of 23 ms of a `small` decoding step on 2 CPU cores).
        cos, sin = rotary_tables(ROPE_CACHE_FRAMES, cfg.dim // cfg.n_heads, cfg.rope_base, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)  # (ROPE_CACHE_FRAMES, hd/2) float32
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.heads, std=0.02)
        nn.init.normal_(self.null_context, std=0.02)
        if self.cfg.shared_embeddings:
            nn.init.normal_(self.mask_embed, std=0.02)
        for block in self.blocks:  # scaled residual branches (GPT-2 style)
            for lin in (block.attn.out, block.ffn.down):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layers))

    @torch.no_grad()
    def init_embeddings_from_codebooks(self, codebooks: torch.Tensor, heads: bool = False) -> "StemGenModel":
        """Start the code embeddings from the codec's own codebooks ``(Q, V, F)``
        (:meth:`stemgen.codec.base.Codec.codebook_vectors`) instead of at random, as VampNet embeds
        tokens through its codec's latents: every table row becomes its code's vector under one
        linear map to D/2 dimensions (the top right singular vectors of all codebook vectors, so
        that the map keeps as much of them as D/2 dimensions can), scaled to the default init's
        spread. The map is linear and shared by the levels, so a frame's embedding (the sum over
        levels) starts as the map of its quantised latent: codes that sound alike start alike,
        and a context's harmony is there from the first step instead of being learned code by
        code. Dimensions beyond the codebooks' rank keep their random init; the MASK entries too.
        ``heads``: the output heads too (each code's row: its vector mapped to D dimensions), so
        that raising one code's logit raises those of the codes that sound like it. Returns ``self``.
        """
        v, half = self.cfg.cardinality, self.cfg.dim // 2
        # one SVD: the map to D/2 dimensions is the first D/2 columns of the map to D
        books = self._mapped_codebooks(codebooks, self.cfg.dim if heads else half)  # (Q, V, min(width, rank))

        def mapped(width: int) -> torch.Tensor:  # (Q, V, min(width, rank)) at the init's spread
            out = books[..., :width]
            return out * (0.02 / out.std().clamp_min(1e-12))

        tables = mapped(half)
        k = tables.shape[-1]
        targets = [self.context_embed] if self.cfg.shared_embeddings else [self.context_embed, self.target_embed]
        for embeds in targets:
            for level, emb in enumerate(embeds):
                emb.weight[:v, :k] = tables[level].to(emb.weight)
        if heads:
            rows = mapped(self.cfg.dim)
            self.heads[:, :, : rows.shape[-1]] = rows.to(self.heads)
        return self

    @torch.no_grad()
    def set_codebook_features(self, codebooks: torch.Tensor) -> "StemGenModel":
        """Fix the codec features of a model with ``codebook_dim`` > 0 from the codec's codebooks
        ``(Q, V, F)`` (:meth:`stemgen.codec.base.Codec.codebook_vectors`): every vector under one
        linear map to ``codebook_dim`` dimensions (the top right singular vectors of all of them;
        linear and shared by the levels, so a frame's summed features are the map of its quantised
        latent), scaled so that the learned projection starts at the tables' spread. Returns ``self``.
        """
        q, v, r = self.cfg.num_levels, self.cfg.cardinality, self.cfg.codebook_dim
        if r <= 0:
            raise ValueError("this model has no codec features (codebook_dim = 0).")
        mapped = self._mapped_codebooks(codebooks, r)
        feats = torch.zeros(q, v, r)
        feats[..., : mapped.shape[-1]] = mapped
        # the projection's init (std 0.02) then gives its output about the tables' spread (0.02)
        feats *= 1.0 / (feats.std().clamp_min(1e-12) * math.sqrt(r))
        self.codebook_features.copy_(feats.to(self.codebook_features))
        return self

    def _mapped_codebooks(self, codebooks: torch.Tensor, width: int) -> torch.Tensor:
        """The codebooks ``(Q, V, F)`` under one linear map to ``(Q, V, min(width, rank))``: the top
        right singular vectors of all the vectors, shared by the levels. Raises ValueError when the
        codebooks do not fit the model's levels and codes."""
        q, v = self.cfg.num_levels, self.cfg.cardinality
        if codebooks.shape[:2] != (q, v):
            raise ValueError(f"codebooks of shape {tuple(codebooks.shape)} do not fit a model of {q} levels x {v} "
                             f"codes: use the codec the model is trained with.")
        books = codebooks.detach().float().cpu()
        _, _, vh = torch.linalg.svd(books.reshape(q * v, -1), full_matrices=False)  # (rank, F)
        return books @ vh[:width].T

    def _codec_features(self, tokens: torch.Tensor, level: int) -> torch.Tensor:
        """Codec features ``(B, T, codebook_dim)`` of one level's codes ``(B, T)`` (MASK ids read row 0)."""
        return self.codebook_features[level][tokens.clamp_max(self.cfg.cardinality - 1)]

    def cast_matmul_weights(self, dtype: torch.dtype) -> "StemGenModel":
        """Store the weights that only enter matrix products (every Linear, the output heads) in
        ``dtype``, for inference under autocast to that dtype: autocast would cast them at every
        forward pass, to the same values, so outputs are unchanged and the per-step casts and half
        the weight memory are saved. Embeddings, norms and the null context stay as they are (the
        residual stream keeps autocast's float32). Returns ``self``."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.to(dtype)
        self.heads.data = self.heads.data.to(dtype)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
              drop_context: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, Q, T)`` context and target tokens, ``(B,)`` instrument ids -> ``(B, T, D)``
        (the context ``(B, Q + 1, T)`` with :attr:`ModelConfig.context_chroma`).

        ``drop_context`` ``(B,)`` bool replaces the context channel by the learned null
        context (classifier-free guidance); a dropped instrument is the id ``NULL_ID``.
        """
        ctx = sum(emb(context[:, q]) for q, emb in enumerate(self.context_embed))  # (B, T, D/2)
        if self.cfg.codebook_dim > 0:
            feats = sum(self._codec_features(context[:, q], q) for q in range(self.cfg.num_levels))
            ctx = ctx + self.codebook_proj(feats.to(self.codebook_proj.weight.dtype)).to(ctx.dtype)
        if self.cfg.context_chroma:
            ctx = ctx + self._chroma(context)
        if drop_context is not None:
            ctx = torch.where(drop_context[:, None, None], self.null_context.to(ctx.dtype).expand_as(ctx), ctx)
        tgt = sum(self._target_level(target[:, q], q) for q in range(self.cfg.num_levels))  # (B, T, D/2)
        if self.cfg.codebook_dim > 0:  # the decoded target codes' features; MASK adds none
            known = (target != self.cfg.mask_id)[..., None]  # (B, Q, T, 1)
            feats = sum(self._codec_features(target[:, q], q) * known[:, q] for q in range(self.cfg.num_levels))
            tgt = tgt + self.codebook_proj(feats.to(self.codebook_proj.weight.dtype)).to(tgt.dtype)
        inst = self.instrument_embed(instrument)[:, None]  # (B, 1, D/2)
        return torch.cat([ctx + inst, tgt + inst], dim=-1)  # (B, T, D)

    def _chroma(self, context: torch.Tensor) -> torch.Tensor:
        """The chroma row of a context ``(B, Q + 1, T)`` -> its embedding ``(B, T, D/2)``."""
        if context.shape[1] != self.cfg.context_rows:
            raise ValueError(f"this model reads its context's pitch-class profile: the context needs "
                             f"{self.cfg.context_rows} rows (the {self.cfg.num_levels} levels, then the codes of "
                             f"stemgen.spectra.chroma_codes), got {context.shape[1]}.")
        steps = chroma_code_steps(context[:, self.cfg.num_levels])  # (B, T, 12)
        rows = steps + CHROMA_STEPS * torch.arange(12, device=steps.device)
        return self.chroma_embed(rows).sum(-2)  # (B, T, D/2)

    def _target_level(self, tokens: torch.Tensor, q: int) -> torch.Tensor:
        """Embedding ``(B, T, D/2)`` of one target level's tokens ``(B, T)`` (MASK id included)."""
        if not self.cfg.shared_embeddings:
            return self.target_embed[q](tokens)
        masked = (tokens == self.cfg.mask_id)[..., None]
        codes = self.context_embed[q](tokens.clamp_max(self.cfg.cardinality - 1))
        return torch.where(masked, self.mask_embed[q].to(codes.dtype), codes)

    def hidden(self, context, target, instrument, drop_context=None, fused: bool = False) -> torch.Tensor:
        """Final normalised hidden states ``(B, T, D)``. ``fused``: attention through the fused
        inference op where it applies (:mod:`stemgen.model.attention`; same values to bf16
        rounding), else the reference."""
        x = self.embed(context, target, instrument, drop_context)
        cos, sin = self.rotary(x.shape[1])
        for block in self.blocks:
            x = block(x, cos, sin, fused)
        return self.norm(x)

    def rotary(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 cos, sin ``(frames, hd/2)`` of the rotary embedding (the cached tables up to
        ``ROPE_CACHE_FRAMES``, computed beyond)."""
        if frames <= self.rope_cos.shape[0]:
            # .float(): the tables stay exact should the whole module be cast to a half type
            return self.rope_cos[:frames].float(), self.rope_sin[:frames].float()
        return rotary_tables(frames, self.cfg.dim // self.cfg.n_heads, self.cfg.rope_base, self.rope_cos.device)

    def forward(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                drop_context: torch.Tensor | None = None, level: int | torch.Tensor | None = None,
                fused: bool = False) -> torch.Tensor:
        """Logits ``(B, Q, T, V)``, or ``(B, T, V)`` for one ``level`` (an int or a 0-dim tensor).
        ``fused``: the fused attention op for inference (see :meth:`hidden`)."""
        h = self.hidden(context, target, instrument, drop_context, fused)  # (B, T, D)
        if isinstance(level, torch.Tensor):  # 0-dim: a compiled caller's graph then serves every level
            logits = h @ self.heads.index_select(0, level.reshape(1))[0].T
            if self.cfg.codebook_heads:
                feats = self.codebook_features.index_select(0, level.reshape(1))[0]  # (V, r)
                logits = logits + self.codebook_out(h) @ feats.to(h.dtype).T
            return logits
        if level is not None:
            logits = h @ self.heads[level].T
            if self.cfg.codebook_heads:
                logits = logits + self.codebook_out(h) @ self.codebook_features[level].to(h.dtype).T
            return logits
        logits = torch.einsum("btd,qvd->bqtv", h, self.heads)
        if self.cfg.codebook_heads:
            logits = logits + torch.einsum("btr,qvr->bqtv", self.codebook_out(h),
                                           self.codebook_features.to(h.dtype))
        return logits

    def level_logits(self, h: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` of hidden states ``h (B, T, D)``, each example under the head of its
        own level ``(B,)``.

        Shapes do not depend on the values (which positions are masked, which levels are drawn), so
        a training step built on it compiles into one graph; scoring every position instead of only
        the masked ones costs one head matrix product per token (2 V D FLOPs, ~1% of the ``paper``
        model's forward).
        """
        logits = torch.einsum("btd,bvd->btv", h, self.heads[level])
        if self.cfg.codebook_heads:
            logits = logits + torch.einsum("btr,bvr->btv", self.codebook_out(h),
                                           self.codebook_features[level].to(h.dtype))
        return logits

__all__ = ["ModelConfig", "PRESETS", "StemGenModel", "NULL_ID"]
