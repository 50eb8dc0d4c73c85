"""Figures for the lessons: one function per kind of picture, each returning its Figure."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

# one colour per method across the course
COLORS = {"base": "#7f7f7f", "kNN": "#1f77b4", "MemDec": "#d62728", "mix": "#2ca02c",
          "base + kNN-LM": "#1f77b4", "MemDec alone": "#ff9896", "base + MemDec": "#d62728",
          "DAPT": "#9467bd"}


def distribution_bars(labels: Sequence[str], dists: dict[str, np.ndarray], title: str = "",
                      ax: Any = None) -> Any:
    """Grouped bars: several next-token distributions over the same candidate tokens."""
    ax = ax or plt.subplots(figsize=(8, 3))[1]
    width = 0.8 / len(dists)
    x = np.arange(len(labels))
    for i, (name, probs) in enumerate(dists.items()):
        ax.bar(x + i * width, probs, width, label=name, color=COLORS.get(name.split()[0]))
    ax.set_xticks(x + width * (len(dists) - 1) / 2, [repr(t)[1:-1] for t in labels], rotation=45)
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def training_curves(history: dict[str, Any]) -> Any:
    """Loss, KL and CE per step (left) and validation perplexities per evaluation (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    steps = history["steps"]
    for key in ("loss", "kl", "ce"):
        left.plot([s["step"] for s in steps], [s[key] for s in steps], label=key, lw=1)
    left.set_xlabel("step")
    left.set_title("training objective")
    left.legend()
    evals = history.get("evals", [])
    for key, label in (("val_ppl", "MemDec alone"), ("val_mix_ppl", "base + MemDec (α=0.5)")):
        points = [(e["step"], e[key]) for e in evals if e.get(key) is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=label)
    right.set_xlabel("step")
    right.set_ylabel("validation perplexity")
    right.set_title("validation")
    if evals:
        right.legend()
    fig.tight_layout()
    return fig


def sweep_curve(grid: Sequence[float], ppls: Sequence[float], xlabel: str, best: float | None = None,
                label: str | None = None, ax: Any = None, color: str | None = None) -> Any:
    """Perplexity as a function of one interpolation weight, with the chosen value marked."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    ax.plot(grid, ppls, marker="o", label=label, color=color)
    if best is not None:
        ax.axvline(best, ls="--", color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation perplexity")
    if label:
        ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def bar_chart(names: Sequence[str], values: Sequence[float], ylabel: str, title: str = "",
              fmt: str = "{:.1f}") -> Any:
    """A labelled bar per method (perplexities, costs per token)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, values, color=[COLORS.get(n.split()[-1], "#9467bd") for n in names])
    for bar, value in zip(bars, values):
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def lines(x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str,
          title: str = "", logx: bool = False) -> Any:
    """Several curves over one x axis (ablations)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
