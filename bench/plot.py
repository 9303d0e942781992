"""Scaling curves as PNG files: cost against size, podnet and its anchor on the same axes.

Shared by the benchmarks' ``--plot PATH`` option. Each series is a name and its (size, cost)
points, medians as the bench printed them; the anchor is drawn dashed so the eye finds it. Writing
a plot never changes what a bench measures: it is called after the measurements, with their numbers.

matplotlib is the ``bench`` extra (``.venv/bin/pip install matplotlib``), never a runtime
dependency of podnet; it is imported here only, when a plot is asked for, with the Agg backend
(no display needed).
"""

from __future__ import annotations

from typing import Sequence

Series = dict[str, Sequence[tuple[float, float]]]


def curves(path: str, title: str, xlabel: str, ylabel: str, series: Series, anchors: Sequence[str] = (),
           note: str = "") -> None:
    """One PNG at ``path``: every series as a line with markers; names in ``anchors`` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    for name, points in series.items():
        pts = sorted(points)
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", linestyle="--" if name in anchors else "-", linewidth=1.8, label=name)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35", ha="left", va="bottom")
        fig.subplots_adjust(bottom=0.2)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
