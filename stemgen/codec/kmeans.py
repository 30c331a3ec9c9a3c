"""Residual k-means: fits the codebooks of a residual vector quantizer on feature rows."""

from __future__ import annotations

import torch


def nearest(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for each row. ``(N, D), (V, D) -> (N,)``."""
    c_sq = (codebook * codebook).sum(1)  # (V,)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        # ||x||^2 is the same for every code of a row, so it does not change the argmin
        out[i : i + chunk] = (c_sq - 2.0 * xb @ codebook.T).argmin(1)
    return out


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on ``x (N, D)``; returns ``(k, D)`` centroids.

    Starts from k distinct random rows; an empty cluster is re-seeded with the row that is
    currently worst served, so every code stays in use.
    """
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} rows, got {n}: fit on more audio or "
                         f"lower the codebook size.")
    cent = x[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in range(iters):
        assign = nearest(x, cent)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        filled = counts > 0
        cent[filled] = sums[filled] / counts[filled, None].to(x.dtype)
        empty = (~filled).nonzero().flatten()
        if len(empty):
            err = ((x - cent[assign]) ** 2).sum(1)
            cent[empty] = x[err.topk(len(empty)).indices]
    return cent


def residual_kmeans(x: torch.Tensor, num_levels: int, k: int, iters: int, seed: int,
                    progress=None) -> torch.Tensor:
    """Fit ``num_levels`` codebooks, each on the residual the previous ones leave.

    Returns ``(num_levels, k, D)``. ``progress``, if given, is called with the level index
    after each level.
    """
    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()
    books = []
    for q in range(num_levels):
        book = kmeans(residual, k, iters, gen)
        residual -= book[nearest(residual, book)]
        books.append(book)
        if progress is not None:
            progress(q)
    return torch.stack(books)
