"""Pictures for a pack's model card, drawn from the figures of its training run (matplotlib, Agg).

    tlgan(figures, out) -> names of the PNG files written into `out`

They are documentation beside model_card.md, not artefacts that services read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TLGAN_CORRELATION = "tlgan_correlation.png"
TLGAN_PROBABILITY = "tlgan_probability.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tlgan(figures: dict, attrs: list[str], out: Path) -> list[str]:
    """TL-GAN: the cosine heat map of the axes before and after Gram-Schmidt, and the oracle's
    probability of each attribute along its own axis. figures = report["tlgan"]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    order = figures.get("gram_schmidt_order", attrs)
    for ax, key, title in [(axes[0], "cosine_before", "raw regression axes"),
                           (axes[1], "cosine_after_gram_schmidt", "after Gram-Schmidt, priority\n" + " > ".join(order))]:
        m = np.asarray(figures[key], np.float64)
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(attrs)), attrs, rotation=45, ha="right")
        ax.set_yticks(range(len(attrs)), attrs)
        for i in range(len(attrs)):
            for j in range(len(attrs)):
                v = 0.0 if abs(m[i, j]) < 0.005 else m[i, j]
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 else "black")
        ax.set_title(f"cosine between axes:\n{title}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(out / TLGAN_CORRELATION, dpi=110)
    plt.close(fig)

    along = figures["probability_along_axis"]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for a in attrs:
        ax.plot(along["strengths"], along[a], marker="o", label=a)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("offset along the unit axis (latent units)")
    ax.set_ylabel("oracle probability of the attribute (mean)")
    ax.set_ylim(0, 1)
    ax.set_title("TL-GAN: classifier probability along each axis", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(out / TLGAN_PROBABILITY, dpi=110)
    plt.close(fig)
    return [TLGAN_CORRELATION, TLGAN_PROBABILITY]
