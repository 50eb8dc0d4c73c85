"""Figures for the lessons: one function per kind of picture, each returning its Figure.

One colour per method across the course (`METHOD_COLORS`, looked up from a series label by
`method_style`), labelled axes on every plot, the course map (`pipeline_diagram`) and the
"you are here" strip every lesson opens with (`you_are_here`).
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# Okabe-Ito colours (colour-blind safe); one per method, the same in every lesson.
METHOD_COLORS = {
    "base": "#6E6E6E",
    "kNN": "#56B4E9",  # p_kNN alone
    "base + kNN-LM": "#0072B2",
    "MemDec alone": "#E69F00",
    "base + MemDec": "#D55E00",
    "DAPT": "#009E73",
    "MLP memory alone": "#F0E442",
    "base + MLP memory": "#CC79A7",
}
CORPUS_COLORS = {"general": "#B3B3B3", "domain": "#CC79A7"}
# by name, for colouring by hand: every method above, plus two shorter older names
COLORS = {**METHOD_COLORS, "MemDec": METHOD_COLORS["base + MemDec"],
          "mix": METHOD_COLORS["base + MemDec"]}

LESSONS = [("00", "overview"), ("01", "datastore"), ("02", "kNN & kNN-LM"),
           ("03", "training"), ("04", "interpolation"), ("05", "plug and play"),
           ("06", "ablations"), ("07", "which memory")]


# --- colours -------------------------------------------------------------------------------

def method_of(label: str) -> str | None:
    """The method a series label names ('base 1 + MemDec (α=0.6)' -> 'base + MemDec'), or None."""
    if "DAPT" in label:
        return "DAPT"
    if "MLP memory" in label:
        return "base + MLP memory" if re.search(r"\bbase\b.*\+", label) else "MLP memory alone"
    if "kNN-LM" in label:
        return "base + kNN-LM"
    if "MemDec" in label or "Memory Decoder" in label:
        return "base + MemDec" if re.search(r"\bbase\b.*\+", label) else "MemDec alone"
    if "kNN" in label:
        return "kNN"
    return "base" if re.match(r"base\b", label) else None


def method_style(label: str) -> dict[str, Any]:
    """Line keywords for a series: the method's colour (none for other labels, so matplotlib
    cycles), dashed for the second base model ('base 1 …')."""
    method = method_of(label)
    style: dict[str, Any] = {"color": METHOD_COLORS[method]} if method else {}
    if re.search(r"\bbase 1\b", label):
        style["linestyle"] = "--"
    return style


def _bar_style(label: str) -> dict[str, Any]:
    """Bar keywords: the method's colour (neutral for other labels), hatched for base 1."""
    style = method_style(label)
    return {"color": style.get("color", "#8C8CA8"), "hatch": "//" if "linestyle" in style else None}


# --- plots ---------------------------------------------------------------------------------

def distribution_bars(labels: Sequence[str], dists: dict[str, np.ndarray], title: str = "",
                      ax: Any = None, xlabel: str = "candidate next token") -> Any:
    """Grouped bars: several next-token distributions over the same candidate tokens."""
    ax = ax or plt.subplots(figsize=(8, 3))[1]
    width = 0.8 / len(dists)
    x = np.arange(len(labels))
    for i, (name, probs) in enumerate(dists.items()):
        ax.bar(x + i * width, probs, width, label=name, **_bar_style(name))
    ax.set_xticks(x + width * (len(dists) - 1) / 2, [repr(t)[1:-1] for t in labels], rotation=45)
    ax.set(xlabel=xlabel, ylabel="probability", title=title)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def training_curves(history: dict[str, Any]) -> Any:
    """Loss, KL and CE per step (left) and validation perplexities per evaluation (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    steps = history["steps"]
    for key, name in LOSS_TERMS.items():
        left.plot([s["step"] for s in steps], [s[key] for s in steps], label=name, lw=1)
    left.set(xlabel="step", ylabel="nats per position", title="training objective")
    left.legend()
    evals = history.get("evals", [])
    for key, label in (("val_ppl", "MemDec alone"), ("val_mix_ppl", "base + MemDec (α=0.5)")):
        points = [(e["step"], e[key]) for e in evals if e.get(key) is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=label, **method_style(label))
    right.set(xlabel="step", ylabel="validation perplexity", title="validation")
    if evals:
        right.legend()
    fig.tight_layout()
    return fig


def sweep_curve(grid: Sequence[float], ppls: Sequence[float], xlabel: str, best: float | None = None,
                label: str | None = None, ax: Any = None, color: str | None = None) -> Any:
    """Perplexity as a function of one interpolation weight, with the chosen value marked; the
    line takes its method's style from `label` (`color` overrides the colour)."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    style = method_style(label or "")
    if color is not None:
        style["color"] = color
    ax.plot(grid, ppls, marker="o", label=label, **style)
    if best is not None:
        ax.axvline(best, ls="--", color="k", lw=0.8)
    ax.set(xlabel=xlabel, ylabel="validation perplexity")
    if label:
        ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def bar_chart(names: Sequence[str], values: Sequence[float], ylabel: str, title: str = "",
              fmt: str = "{:.1f}", xlabel: str = "", color: str | None = None,
              counts: Sequence[int] | None = None) -> Any:
    """A labelled bar per method or group (perplexities, costs per token, gains per bin):
    method names get their method's colour, other bars `color` (default a neutral one).
    `counts`: how many items each bar averages, shown under its name ("n = 113")."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if counts is not None and len(counts) != len(names):
        raise ValueError(f"counts has {len(counts)} entries for {len(names)} bars")
    bars = []
    for name, value in zip(names, values):
        style = _bar_style(name)
        if color is not None and method_of(name) is None:
            style["color"] = color
        bars.append(ax.bar(name, value, **style)[0])
    for bar, value in zip(bars, values):
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom" if value >= 0 else "top")
    if counts is not None:
        ax.set_xticks(range(len(names)), [f"{name}\n(n = {int(n):,})" for name, n in zip(names, counts)])
    if max(len(name) for name in names) > 10:  # long names would overlap
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.axhline(0, color="k", lw=0.6)
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


GROUP_HATCHES = ("", "//", "..", "xx")  # one per series of grouped bars


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str,
                 title: str = "", xlabel: str = "method", log: bool = False,
                 fmt: str = "{:.1f}") -> Any:
    """Bars per group (a method, in its colour), one bar per series side by side (a domain, a
    kind of fact), told apart by hatching; a missing value (None or NaN) leaves a gap."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(groups) + 2), 3.8))
    width = 0.8 / len(series)
    for j, (name, values) in enumerate(series.items()):
        hatch = GROUP_HATCHES[j % len(GROUP_HATCHES)]
        for i, (group, value) in enumerate(zip(groups, values)):
            if value is None or not np.isfinite(value):
                continue
            x = i + (j - (len(series) - 1) / 2) * width
            bar = ax.bar(x, value, width, color=_bar_style(group)["color"], hatch=hatch,
                         edgecolor="white", linewidth=0.5)[0]
            ax.annotate(fmt.format(value), (x, bar.get_height()), ha="center", va="bottom",
                        fontsize=7)
        ax.bar(np.nan, np.nan, color="white", edgecolor="k", hatch=hatch, label=name)  # legend
    ax.set_xticks(range(len(groups)), list(groups))
    if max(len(group) for group in groups) > 10:
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.set(xlabel=xlabel, ylabel=ylabel + (" (log scale)" if log else ""), title=title)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def timing_bars(rounds: dict[str, Sequence[float]], ylabel: str = "ms per generated token",
                title: str = "", xlabel: str = "method") -> Any:
    """The cost of each method over repeated rounds: a bar at the median, every round as a dot
    and a line from the fastest to the slowest round, so the spread shows beside the median."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (name, values) in enumerate(rounds.items()):
        values = np.asarray(values, dtype=float)
        median = float(np.median(values))
        ax.bar(i, median, label="median round" if i == 0 else None, **_bar_style(name))
        ax.vlines(i, values.min(), values.max(), color="k", lw=1.2,
                  label="fastest to slowest round" if i == 0 else None)
        ax.plot(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, "o",
                color="k", ms=3.5, alpha=0.7, label=f"each of the {len(values)} rounds" if i == 0 else None)
        ax.annotate(f"{median:.2f}", (i + 0.42, median), ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rounds)), list(rounds))
    if max(len(name) for name in rounds) > 10:
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def split_bars(groups: Sequence[str], counts: dict[str, Sequence[int]], title: str = "",
               xlabel: str = "book", ylabel: str = "documents used", color: str | None = None) -> Any:
    """Stacked bars: per group (a book), how many documents each split uses; the first split
    at the bottom, darkest, and the legend listed top to bottom as the stack reads."""
    fig, ax = plt.subplots(figsize=(11, 3.4))
    color = color or CORPUS_COLORS["domain"]
    bottom = np.zeros(len(groups))
    shades = np.linspace(1.0, 0.3, max(len(counts), 2))
    for shade, (split, values) in zip(shades, counts.items()):
        values = np.asarray(values, dtype=float)
        ax.bar(list(groups), values, bottom=bottom, label=split, color=color, alpha=float(shade),
               edgecolor="white", linewidth=0.4)
        bottom += values
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], title="split (stacked)", fontsize=8)  # as stacked
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    return fig


MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per series of a `lines` plot
LINESTYLES = ("-", "--", "-.", ":")
MAX_MARKED_POINTS = 30  # longer series are drawn as plain lines


def lines(x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str,
          title: str = "", logx: bool = False) -> Any:
    """Several curves over one x axis (ablations); method names get their method's colour.

    Every series has its own marker and line style, later ones drawn smaller, so curves that
    coincide (τ = 3 over τ = 10) stay visible; a series of more than MAX_MARKED_POINTS points
    (a learning-rate schedule) is drawn without markers."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    marked = len(x) <= MAX_MARKED_POINTS
    for i, (name, ys) in enumerate(series.items()):
        style = {"linestyle": LINESTYLES[i % len(LINESTYLES)], **method_style(name)}
        if marked:
            style |= {"marker": MARKERS[i % len(MARKERS)], "markersize": max(3.5, 8 - 1.2 * i),
                      "markerfacecolor": "none" if i % 2 else None}
        ax.plot(x, ys, label=name, lw=1.4 if marked else 1.2, **style)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


LOSS_TERMS = {"loss": "loss = β·KL + (1−β)·CE", "kl": "KL(p_kNN ‖ p_Mem)", "ce": "CE (next token)"}


def compare_runs(runs: dict[str, list[dict]], keys: Sequence[str] = ("kl", "ce"),
                 title: str = "") -> Any:
    """One panel per loss term (loss, kl, ce), one curve per run: per-step records of
    training runs (e.g. the correct loss against the float() bug)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in runs.items():
            ax.plot([h["step"] for h in history], [h[key] for h in history], label=name, lw=1.2)
        ax.set(xlabel="step", ylabel=f"{LOSS_TERMS.get(key, key)} (nats)", title=title)
        ax.legend()
    fig.tight_layout()
    return fig

# --- the course map ------------------------------------------------------------------------

class Stage(NamedTuple):
    """A box of the course map: centre, text, the lessons that work on it, its method colour."""
    x: float
    y: float
    text: str
    lessons: tuple[str, ...]
    method: str | None


P_KNN, P_LM, P_MEM = r"$p_{\mathrm{kNN}}$", r"$p_{\mathrm{LM}}$", r"$p_{\mathrm{Mem}}$"
TOP, BOTTOM = 3.0, 0.9  # built once from the domain corpus / at inference
STAGES = {
    "corpus": Stage(1.0, TOP, "domain corpus\n(training split)", ("00", "01"), None),
    "base": Stage(3.1, TOP, "base LM\n(frozen)", ("00", "01"), "base"),
    "datastore": Stage(5.2, TOP, "datastore\nkeys: hidden states\nvalues: next tokens",
                       ("01", "06"), None),
    "search": Stage(7.3, TOP, "kNN search\n$k$ nearest keys\n" r"weights $e^{-d/\tau}$",
                    ("02", "06"), "kNN"),
    "targets": Stage(9.4, TOP, f"{P_KNN} targets\nsparse top-$m$,\nevery position",
                     ("02", "03"), "kNN"),
    "train": Stage(11.5, TOP, "train the\nMemory Decoder\n" r"$\beta\,$KL + $(1-\beta)\,$CE",
                   ("03", "06"), "MemDec alone"),
    "query": Stage(5.2, BOTTOM, f"a new context:\nthe base LM gives\nits key $q$ and {P_LM}",
                   ("02", "04"), "base"),
    "knnlm": Stage(7.3, BOTTOM, "kNN-LM\n" r"$\lambda\, p_{\mathrm{kNN}} + (1-\lambda)\,$"
                   f"{P_LM}\na search per token", ("02", "04", "06"), "base + kNN-LM"),
    "bases": Stage(9.4, BOTTOM, f"any base LM with\nthe same tokenizer\ngives {P_LM}",
                   ("04", "05"), "base"),
    "mix": Stage(11.5, BOTTOM, "base + MemDec\n" r"$\alpha\, p_{\mathrm{Mem}} + (1-\alpha)\,$"
                 f"{P_LM}\nno retrieval", ("04", "05"), "base + MemDec"),
}
# (from, to, label of a vertical arrow, dashed)
ARROWS = [("corpus", "base", "", False), ("base", "datastore", "", False),
          ("datastore", "search", "", False), ("search", "targets", "", False),
          ("targets", "train", "", False), ("train", "mix", P_MEM, False), ("bases", "mix", "", False),
          ("query", "knnlm", "", False), ("search", "knnlm", "retrieval at inference", True)]
BOX_W, BOX_H = 1.85, 1.05


def _lesson_id(lesson: int | str) -> str:
    """'03' from 3, '3', '03' or '03_training'; ValueError for a lesson not in LESSONS."""
    text = str(lesson).split("_")[0]
    lesson_id = f"{int(text):02d}" if text.isdigit() else text
    if lesson_id not in dict(LESSONS):
        raise ValueError(f"lesson={lesson!r}: use one of {', '.join(dict(LESSONS))}")
    return lesson_id


def _stage_box(ax: Any, stage: Stage, lit: bool) -> None:
    """One rounded box of the map, tinted by its method's colour; faded unless `lit`."""
    color = METHOD_COLORS[stage.method] if stage.method else "#8C8C8C"
    ax.add_patch(FancyBboxPatch((stage.x - BOX_W / 2, stage.y - BOX_H / 2), BOX_W, BOX_H,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                linewidth=2.2 if lit else 1, edgecolor=color if lit else "#BDBDBD",
                                facecolor=color + ("40" if lit else "10")))
    ax.text(stage.x, stage.y, stage.text, ha="center", va="center", fontsize=8.5,
            linespacing=1.35, color="black" if lit else "#7A7A7A")


def _stage_arrow(ax: Any, start: Stage, end: Stage, label: str, dashed: bool) -> None:
    """An arrow from one box's edge to the next (right, or down to the inference row)."""
    if start.y == end.y:
        p0, p1 = (start.x + BOX_W / 2, start.y), (end.x - BOX_W / 2, end.y)
    else:
        p0, p1 = (start.x, start.y - BOX_H / 2), (end.x, end.y + BOX_H / 2)
    ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=13, color="#444444",
                                 lw=1.2, linestyle="--" if dashed else "-"))
    if label:  # beside a vertical arrow
        ax.text(p0[0] + 0.08, (p0[1] + p1[1]) / 2, label, fontsize=8, ha="left", va="center",
                color="#444444")


def pipeline_diagram(highlight: int | str | Sequence[str] | None = None) -> Any:
    """The course map: corpus -> base LM -> datastore -> kNN search -> p_kNN targets -> Memory
    Decoder training, and at inference kNN-LM (retrieval) vs base + MemDec (none). `highlight`:
    a lesson ('03', 3) or stage names (see STAGES) to light up; None lights everything."""
    if highlight is None:
        lit = set(STAGES)
    elif isinstance(highlight, (int, str)) and str(highlight) not in STAGES:
        lesson = _lesson_id(highlight)
        lit = {name for name, stage in STAGES.items() if lesson in stage.lessons or lesson == "00"}
    else:
        names = [highlight] if isinstance(highlight, str) else list(highlight)
        unknown = sorted(set(names) - set(STAGES))
        if unknown:
            raise ValueError(f"highlight={unknown}: stages are {', '.join(STAGES)}")
        lit = set(names)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for start, end, label, dashed in ARROWS:
        _stage_arrow(ax, STAGES[start], STAGES[end], label, dashed)
    for name, stage in STAGES.items():
        _stage_box(ax, stage, name in lit)
    ax.text(0.05, 4.0, "built once, from the domain corpus", fontsize=10, weight="bold", va="center")
    ax.text(0.05, 1.95, "at inference, per token", fontsize=10, weight="bold", va="center")
    ax.plot([0.05, 12.5], [2.2, 2.2], color="#DDDDDD", lw=1)
    ax.set(xlim=(0, 12.5), ylim=(0.2, 4.25))
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def you_are_here(lesson: int | str, lessons: Sequence[tuple[str, str]] = tuple(LESSONS)) -> Any:
    """A one-line strip of the lessons with `lesson` ('03', 3 or '03_training') marked."""
    current = _lesson_id(lesson)
    fig, ax = plt.subplots(figsize=(11, 0.75))
    width = 12.5 / len(lessons)
    for i, (number, name) in enumerate(lessons):
        here = number == current
        ax.add_patch(FancyBboxPatch((i * width + 0.08, 0.34), width - 0.16, 0.62,
                                    boxstyle="round,pad=0,rounding_size=0.15", lw=1.5 if here else 0.8,
                                    edgecolor="#333333" if here else "#BDBDBD",
                                    facecolor=METHOD_COLORS["base + MemDec"] if here else "white"))
        ax.text((i + 0.5) * width, 0.65, f"{number} · {name}", ha="center", va="center",
                fontsize=8.5, weight="bold" if here else "normal",
                color="white" if here else ("#555555" if number < current else "#9A9A9A"))
        if here:
            ax.text((i + 0.5) * width, 0.13, "▲ you are here", ha="center", va="center", fontsize=8)
    ax.set(xlim=(0, 12.5), ylim=(0, 1))
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    return fig
