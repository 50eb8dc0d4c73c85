"""Figures: labelled axes and complete legends on every plot, one colour per method, the
course map and the "you are here" strip."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from memdec_helpers.lessons import plots  # noqa: E402

HISTORY = {"steps": [{"step": i, "loss": 3.0 - i / 50, "kl": 2.0, "ce": 4.0} for i in range(1, 11)],
           "evals": [{"step": 5, "val_ppl": 90.0, "val_mix_ppl": 80.0},
                     {"step": 10, "val_ppl": 85.0, "val_mix_ppl": 75.0}]}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def every_plot() -> dict[str, matplotlib.figure.Figure]:
    """One figure from every plotting helper of the lessons (the course map and strip aside)."""
    grid = np.linspace(0, 1, 5)
    return {
        "distribution_bars": plots.distribution_bars(["a", "b"], {"base LM": np.array([0.6, 0.4]),
                                                                  "kNN": np.array([1.0, 0.0])}),
        "training_curves": plots.training_curves(HISTORY),
        "sweep_curve": plots.sweep_curve(grid, grid + 1, "α", best=0.5, label="base + MemDec"),
        "bar_chart": plots.bar_chart(["unseen", "≥1000"], [-0.2, 0.3], "gain (nats)",
                                     xlabel="count in the training split", counts=[113, 9000]),
        "lines": plots.lines([1, 4, 16], {"τ = 1": [3, 2, 1], "base alone": [4, 4, 4]}, "k",
                             "perplexity", logx=True),
        "lines, one long series": plots.lines(np.arange(240), {"learning rate": np.linspace(0, 1, 240)},
                                              "step", "learning rate"),
        "compare_runs": plots.compare_runs({"correct loss": HISTORY["steps"],
                                            "float() bug": HISTORY["steps"]}),
        "grouped_bars": plots.grouped_bars(["base", "base + MLP memory"], {"story": [140, 71],
                                           "facts": [390, None]}, "test perplexity", log=True),
        "timing_bars": plots.timing_bars({"base 0": [1.0, 1.2, 0.9], "base 0 + MemDec": [1.5, 1.6, 2.4]}),
        "split_bars": plots.split_bars(["Genesis", "Exodus"], {"train": [40, 30], "validation": [5, 4],
                                                               "test": [5, 6]}),
    }


def series_of(ax) -> list[str]:
    """Labels of the series drawn on `ax` (lines, bar groups, scatter and line collections)."""
    artists = ax.get_lines() + ax.containers + ax.collections
    return [a.get_label() for a in artists if not a.get_label().startswith("_")]


@pytest.mark.parametrize("name", list(every_plot()))
def test_every_plot_labels_both_axes_and_has_a_complete_legend(name):
    fig = every_plot()[name]
    assert isinstance(fig, matplotlib.figure.Figure)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: unlabelled axis"
        drawn = series_of(ax)
        legend = ax.get_legend()
        if len(drawn) > 1:
            assert legend is not None, f"{name}: {len(drawn)} series and no legend"
        if legend is not None:
            assert sorted(t.get_text() for t in legend.get_texts()) == sorted(drawn), name


def test_curves_that_coincide_stay_visible():
    """06's kNN-LM grid: τ = 3 and τ = 10 lie on top of each other; each series gets its own
    marker and line style, later ones smaller."""
    same = [3.0, 2.0, 1.0]
    fig = plots.lines([1, 4, 16], {f"τ = {t}": same for t in (1, 3, 10, 100)}, "k", "perplexity")
    drawn = fig.axes[0].get_lines()
    styles = {(line.get_marker(), line.get_linestyle()) for line in drawn}
    assert len(styles) == len(drawn)
    sizes = [line.get_markersize() for line in drawn]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_a_long_series_has_no_markers():
    """03's learning-rate plot: 240 steps are a line, not 240 markers."""
    line = plots.lines(np.arange(240), {"learning rate": np.ones(240)}, "step", "lr").axes[0].get_lines()[0]
    assert line.get_marker() in ("None", None, "")
    short = plots.lines([1, 2], {"a": [1, 2]}, "x", "y").axes[0].get_lines()[0]
    assert short.get_marker() == "o"


def test_bars_name_how_many_items_they_average():
    """04's frequency bins: the number of test tokens in each bin under its name."""
    fig = plots.bar_chart(["unseen", "1–9"], [-0.1, 0.2], "gain", counts=[113, 2048])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["unseen\n(n = 113)", "1–9\n(n = 2,048)"]
    with pytest.raises(ValueError, match="counts has 1 entries for 2 bars"):
        plots.bar_chart(["a", "b"], [1, 2], "y", counts=[3])


def test_timing_bars_show_every_round_and_the_spread():
    """05's timing: the median bar, the fastest-to-slowest line and one dot per round."""
    rounds = {"base 0": [1.0, 1.2, 0.9, 1.1, 1.0], "base 0 + kNN-LM": [3.0, 2.5, 4.0, 3.1, 2.9]}
    ax = plots.timing_bars(rounds).axes[0]
    assert [b.get_height() for b in ax.patches] == pytest.approx([1.0, 3.0])  # medians
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert sum(len(d.get_ydata()) for d in dots) == 10
    spans = ax.collections[0].get_segments() + ax.collections[1].get_segments()
    assert sorted((s[0][1], s[1][1]) for s in spans) == [(0.9, 1.2), (2.5, 4.0)]


def test_split_bars_stack_in_legend_order_with_an_x_label():
    """00's split bars: the legend reads top to bottom as the stack does (test on top)."""
    ax = plots.split_bars(["Genesis", "Exodus"], {"train": [40, 30], "validation": [5, 4],
                                                  "test": [5, 6]}).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["test", "validation", "train"]
    assert ax.get_xlabel() == "book"
    tops = [ax.containers[i][0].get_y() + ax.containers[i][0].get_height() for i in range(3)]
    assert tops == sorted(tops)  # train at the bottom, test on top


def test_training_curves_name_the_loss_terms():
    left = plots.training_curves(HISTORY).axes[0]
    assert left.get_ylabel() == "nats per position"
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "loss = β·KL + (1−β)·CE", "KL(p_kNN ‖ p_Mem)", "CE (next token)"]


@pytest.mark.parametrize("label, method", [
    ("base", "base"), ("base LM", "base"), ("base 1", "base"), ("base alone", "base"),
    ("kNN", "kNN"), ("mean entropy of p_kNN", "kNN"), ("base + kNN-LM (λ, τ=3)", "base + kNN-LM"),
    ("base 0 + kNN-LM", "base + kNN-LM"), ("MemDec alone", "MemDec alone"),
    ("base 1 + MemDec (best α = 0.60)", "base + MemDec"), ("base + MemDec (α=0.5)", "base + MemDec"),
    ("DAPT", "DAPT"), ("MLP memory alone", "MLP memory alone"),
    ("base 0 + MLP memory", "base + MLP memory"), ("τ = 3", None), ("learning rate", None), ("validation", None)])
def test_labels_map_to_one_method(label, method):
    assert plots.method_of(label) == method


def test_grouped_bars_colour_by_method_hatch_by_series_and_skip_missing_values():
    ax = plots.grouped_bars(["base", "base + MLP memory"], {"story": [140, 71], "facts": [390, None]},
                            "test perplexity", log=True).axes[0]
    drawn = [b for b in ax.patches if np.isfinite(b.get_height())]
    assert [round(b.get_height()) for b in drawn] == [140, 71, 390]  # the missing bar is a gap
    assert matplotlib.colors.to_hex(drawn[1].get_facecolor()).upper() == plots.METHOD_COLORS[
        "base + MLP memory"]
    assert [b.get_hatch() or "" for b in drawn] == ["", "", "//"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["story", "facts"]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()


def test_compare_runs_has_a_panel_per_term_and_a_curve_per_run():
    keys = ("loss", "kl", "ce")
    fig = plots.compare_runs({"a": HISTORY["steps"], "b": HISTORY["steps"][:5]}, keys=keys)
    assert [ax.get_ylabel() for ax in fig.axes] == [f"{plots.LOSS_TERMS[k]} (nats)" for k in keys]
    assert [len(line.get_xdata()) for line in fig.axes[1].get_lines()] == [10, 5]


def test_one_distinct_colour_per_method_in_every_plot():
    colors = plots.METHOD_COLORS
    assert len(set(colors.values())) == len(colors) == 8
    fig = plots.sweep_curve([0, 1], [2, 1], "α", label="base 1 + MemDec")
    line = fig.axes[0].get_lines()[0]
    assert matplotlib.colors.to_hex(line.get_color()).upper() == colors["base + MemDec"]
    assert line.get_linestyle() == "--"  # the second base model
    bars = plots.bar_chart(["base 0", "base 0 + kNN-LM"], [1, 2], "ms").axes[0].patches
    assert [matplotlib.colors.to_hex(b.get_facecolor()).upper() for b in bars] == [
        colors["base"], colors["base + kNN-LM"]]
    assert plots.COLORS["MemDec"] == colors["base + MemDec"]  # older name, same colour



def test_colors_name_every_method_the_lessons_colour_by_hand():
    for name in ("base", "kNN", "base + kNN-LM", "MemDec alone", "base + MemDec", "DAPT"):
        assert plots.COLORS[name] == plots.METHOD_COLORS[name]
    fig = plots.sweep_curve([0, 1], [2, 1], "α", label="base 1 + MemDec", color="#8C564B")
    line = fig.axes[0].get_lines()[0]
    assert matplotlib.colors.to_hex(line.get_color()).upper() == "#8C564B"  # `color` wins
    assert line.get_linestyle() == "--"  # the rest of the label's style stays

def box_texts(fig) -> dict[str, matplotlib.text.Text]:
    return {t.get_text(): t for t in fig.axes[0].texts}


def lit(fig, stage: str) -> bool:
    """Whether the box of `stage` is drawn lit (its text in black)."""
    return box_texts(fig)[plots.STAGES[stage].text].get_color() == "black"


def test_pipeline_diagram_shows_every_stage_and_lights_a_lesson():
    fig = plots.pipeline_diagram()
    text = " ".join(box_texts(fig))
    for words in ("domain corpus", "base LM", "datastore", "kNN search", "targets",
                  "Memory Decoder", "kNN-LM", "base + MemDec", "retrieval at inference"):
        assert words in text
    assert all(lit(fig, stage) for stage in plots.STAGES)
    lesson3 = plots.pipeline_diagram("03")
    assert lit(lesson3, "train") and lit(lesson3, "targets") and not lit(lesson3, "corpus")
    assert plots.pipeline_diagram(3).axes[0].texts[0].get_text() == lesson3.axes[0].texts[0].get_text()
    only = plots.pipeline_diagram(["datastore"])
    assert lit(only, "datastore") and not lit(only, "search")
    with pytest.raises(ValueError, match="lesson=.*00, 01"):
        plots.pipeline_diagram(9)
    with pytest.raises(ValueError, match="stages are"):
        plots.pipeline_diagram(["nowhere"])


def test_you_are_here_marks_one_lesson():
    fig = plots.you_are_here("03_training")
    texts = box_texts(fig)
    assert len([t for t in texts if " · " in t]) == len(plots.LESSONS)
    assert texts["03 · training"].get_weight() == "bold"
    assert texts["02 · kNN & kNN-LM"].get_weight() == "normal"
    marker = texts["▲ you are here"]
    assert marker.get_position()[0] == texts["03 · training"].get_position()[0]  # under 03
    with pytest.raises(ValueError, match="lesson='12'"):
        plots.you_are_here("12")
