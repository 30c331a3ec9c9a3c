"""Figures of the benchmark suite: real-vs-generated descriptor histograms, metrics by setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .descriptors import NAMES


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def descriptor_histograms(real: list, generated: list, path: str | Path, title: str = "") -> Path:
    """One panel per descriptor: the share of each value in the real and the generated population."""
    from .distances import shared_histograms

    plt = _plt()
    fig, axes = plt.subplots(3, 4, figsize=(16, 9.5))
    for ax, name in zip(axes.flat, NAMES):
        p, q, bins = shared_histograms([v for d in real for v in d.values(name)],
                                       [v for d in generated for v in d.values(name)])
        x = np.arange(len(bins))
        ax.bar(x - 0.2, p / max(p.sum(), 1), 0.4, label="real")
        ax.bar(x + 0.2, q / max(q.sum(), 1), 0.4, label="generated")
        step = max(1, len(bins) // 8)
        ax.set_xticks(x[::step], [str(b) for b in bins][::step], rotation=45, fontsize=7)
        ax.set_title(name, fontsize=9)
    axes.flat[-1].axis("off")
    axes.flat[0].legend()
    fig.suptitle(title)
    return _save(plt, fig, path)


def metric_by_setting(results: dict, path: str | Path) -> Path:
    """MIRDD (with interval and noise floor), Fréchet distances and context-agreement gaps per config."""
    plt = _plt()
    names = list(results["configs"])
    cfgs = [results["configs"][n] for n in names]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    m = np.array([c["mirdd"]["mirdd"] for c in cfgs])
    lo = np.array([c["mirdd"]["interval"][0] for c in cfgs])
    hi = np.array([c["mirdd"]["interval"][1] for c in cfgs])
    axes[0].errorbar(x, m, yerr=[m - lo, hi - m], fmt="o", capsize=4)
    axes[0].axhline(np.mean([c["mirdd"]["noise_floor"] for c in cfgs]), ls="--", color="gray", label="real split-half")
    axes[0].set_title("MIRDD (lower is better)")
    axes[0].legend()
    for key in ("fd_logmel", "fad_vggish"):
        if all(c.get(key) is not None for c in cfgs):
            axes[1].plot(x, [c[key] for c in cfgs], "o-", label=key)
    axes[1].set_title("Fréchet distance (lower is better)")
    axes[1].legend()
    for key in ("chroma_gap", "beat_gap"):
        vals = [c["context_agreement"].get(key) for c in cfgs]
        if all(v is not None for v in vals):
            axes[2].plot(x, vals, "o-", label=key)
            ref = results["real"]["context_agreement"].get(key)
            if ref is not None:
                axes[2].axhline(ref, ls=":", color=axes[2].lines[-1].get_color(), label=f"{key}, real stems")
    axes[2].set_title("context agreement gap (own - mismatched)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, fontsize=8)
    fig.suptitle(f"{results['grid']} (N={results['n']})")
    return _save(plt, fig, path)
