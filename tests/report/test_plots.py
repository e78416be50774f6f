"""``mcl.report.plots``: the claim chart carries chance lines and ensemble-k; every feature map has a legend."""

import numpy as np

from mcl.report import plots


def test_claim_chart_has_stages_mcl_k_ensemble_k_and_chance():
    names = ["stage-1", "stage-2", "stage-3", "mcl-2", "mcl-3", "ensemble-2", "ensemble-3", "random-init"]
    assert [names[i] for i in plots.claim_rows(names)] == ["stage-1", "stage-2", "stage-3", "mcl-3", "ensemble-3"]
    assert [names[i] for i in plots.claim_rows(names, k=2)][-2:] == ["mcl-2", "ensemble-2"]
    matrix = np.random.default_rng(0).uniform(size=(len(names), 2))
    figure = plots.claim_bars("linear", names, ["shape", "color"], matrix, {"shape": 0.1, "color": 0.25})
    ax = figure.axes[0]
    _, labels = ax.get_legend_handles_labels()
    assert labels.count("chance") == 1 and {"mcl-3", "ensemble-3"} <= set(labels)
    lines = [segments for collection in ax.collections if collection.get_linestyle()[0][1]  # dashed: chance
             for segments in collection.get_segments()]
    assert sorted(round(float(line[0][1]), 6) for line in lines) == [10.0, 25.0]  # one chance line per attribute
    assert plots.png(figure).startswith(b"\x89PNG")


def test_every_feature_map_has_a_legend():
    rng = np.random.default_rng(0)
    maps = {"stage-1": rng.normal(size=(20, 2)), "mcl-2": rng.normal(size=(20, 2))}
    attributes = {"shape": rng.integers(0, 3, 20), "color": rng.integers(0, 2, 20)}
    values = {"shape": ["circle", "square", "star"], "color": ["red", "blue"]}
    figure = plots.scatter_grid(maps, attributes, values, "PCA")
    assert len(figure.axes) == 4
    for ax in figure.axes:
        legend = ax.get_legend()
        assert legend is not None and legend.get_title().get_text() in values
        assert [t.get_text() for t in legend.get_texts()] == values[legend.get_title().get_text()]
        assert "colored by" in ax.get_title()


def test_heatmap_marks_chance_in_the_column_labels():
    figure = plots.heatmap("linear", ["stage-1"], ["color"], np.array([[0.5]]), {"color": 0.1})
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["color (chance 10%)"]


def test_finetune_chart_pairs_each_baseline_with_its_mcl_counterpart():
    names = ["stage-0", "stage-1", "stage-2", "mcl-2", "finetune-1", "finetune-2"]
    assert [names[i] for i in plots.claim_rows(names, baseline="finetune")] == names
    matrix = np.random.default_rng(0).uniform(size=(len(names), 2))
    figure = plots.claim_bars("zeroshot", names, ["shape", "mark"], matrix, {"mark": 0.25}, baseline="finetune")
    ax = figure.axes[0]
    bars = {container.get_label(): container.patches[0] for container in ax.containers}
    assert set(bars) == set(names)
    assert bars["finetune-1"].get_facecolor() == bars["stage-1"].get_facecolor()  # compared with stage-1
    assert bars["finetune-2"].get_facecolor() == bars["mcl-2"].get_facecolor()
    assert bars["finetune-2"].get_hatch() == "//" and bars["mcl-2"].get_hatch() is None
    assert len({bars[n].get_facecolor() for n in names[:4]}) == 4
    assert ax.get_ylabel() == "zero-shot accuracy (%)"


def test_training_curves_dash_every_baseline():
    record = [{"epoch": 1, "loss": 1.0, "lr": 0.1}, {"epoch": 2, "loss": 0.5, "lr": 0.1}]
    figure = plots.training_curves({"stage-1": record, "ensemble-2": record, "finetune-1": record})
    styles = {line.get_label(): line.get_linestyle() for line in figure.axes[0].get_lines()}
    assert styles == {"stage-1": "-", "ensemble-2": "--", "finetune-1": "--"}


def _inside_figure(figure, text) -> bool:
    """Whether the drawn text lies within the figure (a clipped title sticks out of it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    box, frame = text.get_window_extent(renderer), figure.bbox
    return box.x0 >= frame.x0 - 0.5 and box.x1 <= frame.x1 + 0.5 and box.y1 <= frame.y1 + 0.5


def test_a_long_claim_title_is_wrapped_inside_the_figure():
    names = ["stage-0", "stage-1", "stage-2", "mcl-2", "finetune-1", "finetune-2"]
    matrix = np.full((len(names), 2), 0.5)
    figure = plots.claim_bars("zeroshot", names, ["shape", "color"], matrix, {"shape": 0.1}, baseline="finetune",
                              n=300)
    title = figure.axes[0].title
    assert title.get_text().replace("\n", " ").startswith("zero-shot accuracy per attribute")
    assert "\n" in title.get_text() and _inside_figure(figure, title)


def test_claim_bars_carry_the_wilson_interval_of_the_headline():
    from mcl.report.findings import binomial_interval

    names = ["stage-1", "mcl-2"]
    matrix = np.array([[0.42, 0.9], [0.74, 0.95]])
    ax = plots.claim_bars("linear", names, ["texture", "color"], matrix, {}, n=300).axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert len(bars) == 2
    segments = bars[0].errorbar.lines[2][0].get_segments()  # stage-1's vertical error lines
    low, high = binomial_interval(0.42, 300)
    assert np.allclose([segments[0][0][1], segments[0][1][1]], [100 * low, 100 * high])
    assert plots.claim_bars("linear", names, ["texture", "color"], matrix, {}).axes[0].containers[0].errorbar is None


def test_heatmap_cells_carry_the_interval_half_width():
    from mcl.report.findings import binomial_interval

    figure = plots.heatmap("linear", ["stage-1"], ["color"], np.array([[0.5]]), {"color": 0.1}, n=1000)
    low, high = binomial_interval(0.5, 1000)
    assert [t.get_text() for t in figure.axes[0].texts] == [f"50.0 ± {100 * (high - low) / 2:.1f}"]
    assert [t.get_text() for t in plots.heatmap("linear", ["a"], ["c"], np.array([[0.5]])).axes[0].texts] == ["50.0"]


def test_similarity_histograms_span_the_data_not_minus_one_to_one():
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.9, 0.99, size=(30, 30))
    np.fill_diagonal(similarity, 0.995)
    figure = plots.pair_histograms({"stage-1": (similarity, None)}, "positives", "negatives")
    low, high = figure.axes[0].get_xlim()
    assert 0.88 <= low < 0.9 and 0.995 < high <= 1.0


def test_feature_map_legends_are_readable():
    rng = np.random.default_rng(0)
    figure = plots.scatter_grid({"stage-1": rng.normal(size=(10, 2))}, {"shape": rng.integers(0, 3, 10)},
                                {"shape": ["circle", "square", "star"]}, "PCA")
    legend = figure.axes[0].get_legend()
    assert min(t.get_fontsize() for t in legend.get_texts()) >= plots.LEGEND_FONT
