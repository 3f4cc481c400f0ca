"""varsmooth.plots: every function writes a readable PNG atomically; panels and plotted numbers are checked."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from varsmooth import metrics, plots
from varsmooth.io import read_csv, write_csv


def _check_png(path, expected):
    assert path == expected
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 0  # not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind


def _tidy_rows(rng):
    rows = []
    for noise in ("symmetric:0.2", "pairflip:0.2"):
        for seed in range(3):
            for alpha in (0.0, 0.1, 0.5):
                rows.append(
                    dict(
                        method="ls",
                        alpha=alpha,
                        rho="",
                        noise=noise,
                        seed=seed,
                        metric="test_acc",
                        value=0.8 + alpha / 10 + rng.normal(0, 0.01),
                    )
                )
                rows.append(
                    dict(method="ls", alpha=alpha, rho="", noise=noise, seed=seed, metric="train_acc", value=1.0)
                )
            for rho in (0.0, 0.05, 0.2):
                rows.append(
                    dict(
                        method="sam",
                        alpha="",
                        rho=rho,
                        noise=noise,
                        seed=seed,
                        metric="test_acc",
                        value=0.85 + rho / 10 + rng.normal(0, 0.01),
                    )
                )
            rows.append(
                dict(
                    method="ivon",
                    alpha="",
                    rho="",
                    noise=noise,
                    seed=seed,
                    metric="test_acc",
                    value=0.9 + rng.normal(0, 0.01),
                )
            )
    return rows


def test_accuracy_vs_hyperparameter_layout_and_numbers(tmp_path):
    rng = np.random.default_rng(0)
    rows = _tidy_rows(rng)
    write_csv(tmp_path / "results.csv", rows)
    csv_rows = read_csv(tmp_path / "results.csv")  # strings, as experiments and the report read them back
    fig = plots.accuracy_vs_hyperparameter_figure(
        csv_rows, x={"ls": "alpha", "sam": "rho"}, baseline_methods=["ls", "sam"], band_methods=["ivon"]
    )
    assert len(fig.axes) == 2 * 2  # rows: LS alpha, SAM rho; columns: the two noise settings
    ax = fig.axes[1]  # LS row, pairflip panel
    assert ax.get_title() == "noise = pairflip:0.2" and ax.get_xlabel() == "alpha"
    line = ax.containers[0].lines[0]
    for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
        vals = [
            r["value"]
            for r in rows
            if r["method"] == "ls" and r["alpha"] == x and r["noise"] == "pairflip:0.2" and r["metric"] == "test_acc"
        ]
        assert len(vals) == 3 and y == pytest.approx(np.mean(vals), abs=1e-12)
    # error bar half-length = sample std over seeds
    seg = ax.containers[0].lines[2][0].get_segments()[0]
    vals = [
        r["value"]
        for r in rows
        if r["method"] == "ls" and r["alpha"] == 0.0 and r["noise"] == "pairflip:0.2" and r["metric"] == "test_acc"
    ]
    assert (seg[1, 1] - seg[0, 1]) / 2 == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    # the IVON band: a horizontal line at the seed mean and a span of ± std
    ivon = [r["value"] for r in rows if r["method"] == "ivon" and r["noise"] == "pairflip:0.2"]
    band = [ln for ln in ax.get_lines() if ln.get_label() == "ivon"]
    assert band and band[0].get_ydata()[0] == pytest.approx(np.mean(ivon), abs=1e-12)
    ys = ax.transData.inverted().transform(ax.patches[0].get_verts())[:, 1]  # display -> data coordinates
    assert ys.min() == pytest.approx(np.mean(ivon) - np.std(ivon, ddof=1), abs=1e-9)
    assert ys.max() == pytest.approx(np.mean(ivon) + np.std(ivon, ddof=1), abs=1e-9)

    one = plots.accuracy_vs_hyperparameter_figure(rows, x="alpha", baseline_methods=["ls"], panel=None)
    assert len(one.axes) == 1
    path = plots.accuracy_vs_hyperparameter(
        rows,
        x={"ls": "alpha", "sam": "rho"},
        baseline_methods=["ls", "sam"],
        band_methods=["ivon"],
        path=tmp_path / "acc.png",
        title="t",
    )
    _check_png(path, tmp_path / "acc.png")
    with pytest.raises(ValueError, match="no rows"):
        plots.accuracy_vs_hyperparameter_figure(rows, x="alpha", baseline_methods=["ls"], metric="nope")


def test_accuracy_bands_split_by_column(tmp_path):
    rows = [
        dict(method="ivon", ess=e, noise="n", seed=s, metric="test_acc", value=v)
        for e, base in ((600, 0.8), (60, 0.9))
        for s, v in enumerate((base, base + 0.02))
    ]
    rows += [dict(method="erm", ess="", noise="n", seed=s, metric="test_acc", value=0.7) for s in range(2)]
    rows += [
        dict(method="ls", alpha=a, noise="n", seed=s, metric="test_acc", value=0.75) for a in (0, 1) for s in range(2)
    ]
    fig = plots.accuracy_vs_hyperparameter_figure(
        rows, x="alpha", baseline_methods=["ls"], band_methods=["ivon", "erm"], band_by=("ess",)
    )
    lines = {ln.get_label(): ln.get_ydata()[0] for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert lines == pytest.approx({"ivon (ess=600)": 0.81, "ivon (ess=60)": 0.91, "erm": 0.7})


def test_image_grid_panels_values_and_channels(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.random(13)
    labels = [f"label {i % 10}" for i in range(13)]
    fig = plots.image_grid_figure(rng.normal(size=(13, 28, 28)), values, ncols=5, labels=labels, title="x")
    assert len(fig.axes) == 13  # unused grid cells are removed
    assert fig.axes[7].get_xlabel() == f"label 7\n{values[7]:.3f}"
    assert len(plots.image_grid_figure(rng.normal(size=(4, 1, 8, 8)), values[:4], ncols=8).axes) == 4
    rgb = plots.image_grid_figure(rng.normal(size=(3, 3, 8, 8)), values[:3], ncols=2)
    shown = rgb.axes[0].get_images()[0].get_array()
    assert shown.shape == (8, 8, 3) and shown.min() == 0.0 and shown.max() == 1.0  # CHW -> HWC, scaled to [0, 1]
    path = plots.image_grid(rng.normal(size=(6, 28, 28)), values[:6], tmp_path / "g.png", ncols=3, labels=labels[:6])
    _check_png(path, tmp_path / "g.png")
    with pytest.raises(ValueError, match="one value"):
        plots.image_grid_figure(rng.normal(size=(3, 8, 8)), values[:2])
    with pytest.raises(ValueError, match="shape"):
        plots.image_grid_figure(rng.normal(size=(3, 2, 8, 8)), values[:3])


def test_smoothed_label_bars(tmp_path):
    k = 4
    ls = np.full((k, k), 0.1 / k) + 0.9 * np.eye(k)
    ols = np.eye(k) * 0.97 + 0.01
    ols[0, 3] = 0.0  # a zero must still be drawable on a log axis
    fig = plots.smoothed_label_bars_figure({"ls": ls, "ols": ols}, classes=[0, 2, 3])
    assert len(fig.axes) == 3 and fig.axes[0].get_yscale() == "log"
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [*ls[0, [0, 2, 3]], *np.maximum(ols[0, [0, 2, 3]], 1e-6)])
    _check_png(plots.smoothed_label_bars({"ls": ls, "ols": ols}, tmp_path / "s.png"), tmp_path / "s.png")
    with pytest.raises(ValueError, match="same shape"):
        plots.smoothed_label_bars_figure({"a": ls, "b": np.eye(3)})


def test_histogram_line_and_bar_plots(tmp_path):
    rng = np.random.default_rng(2)
    hist = plots.noise_histogram({"ivon": rng.gamma(2, 0.05, 500), "ls": np.full(500, 0.09)}, tmp_path / "h.png")
    _check_png(hist, tmp_path / "h.png")
    _check_png(plots.noise_histogram({"ls": np.full(10, 0.09)}, tmp_path / "c.png"), tmp_path / "c.png")
    x = np.linspace(-3, 3, 20)
    line = plots.line_plot(
        x,
        {"a": np.tanh(x), "b": (x[:5], x[:5] ** 2)},
        tmp_path / "l.png",
        xlabel="f",
        ylabel="eps",
        yerr={"a": np.full(20, 0.1)},
    )
    _check_png(line, tmp_path / "l.png")
    bar = plots.bar_plot(
        [0.1, 0.2], {"ivon": [0.9, 0.8], "ls": [0.7, 0.5]}, tmp_path / "b.png", errors={"ivon": [0.01, 0.02]}
    )
    _check_png(bar, tmp_path / "b.png")
    with pytest.raises(ValueError, match="2 groups"):
        plots.bar_plot([0.1, 0.2], {"ivon": [0.9]}, tmp_path / "x.png")


def test_bar_plot_rows_aggregates_over_seeds(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    rows = [
        dict(method=m, kappa=k, seed=s, metric="test_acc", value=rng.random())
        for m in ("ivon", "ls")
        for k in (0.1, 0.3)
        for s in range(4)
    ]
    seen = {}

    def fake_bar_plot(groups, values, path, *, errors=None, **options):
        seen.update(groups=groups, values=values, errors=errors, options=options)
        return path

    monkeypatch.setattr(plots.charts, "bar_plot", fake_bar_plot)
    plots.bar_plot_rows(rows, group="kappa", path=tmp_path / "b.png")
    assert seen["groups"] == ["0.1", "0.3"] and seen["options"]["xlabel"] == "kappa"
    for m in ("ivon", "ls"):
        for gi, k in enumerate((0.1, 0.3)):
            vals = [r["value"] for r in rows if r["method"] == m and r["kappa"] == k]
            assert seen["values"][m][gi] == pytest.approx(np.mean(vals), abs=1e-12)
            assert seen["errors"][m][gi] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)


def _synthetic_predictions(n: int = 600, k: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels (n,) and softmax probabilities (n, k) of an over-confident and an under-confident model."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels]
    out = {}
    for name, temperature in (("sharp", 0.3), ("flat", 3.0)):
        z = logits / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        out[name] = (labels, p / p.sum(axis=1, keepdims=True))
    return out


def test_reliability_diagram_bins_and_ece_in_the_title(tmp_path):
    preds = _synthetic_predictions()
    fig = plots.reliability_diagram_figure(preds, bins=10)
    assert len(fig.axes) == 2
    for ax, (name, (labels, probs)) in zip(fig.axes, preds.items(), strict=True):
        assert ax.get_title() == f"{name}\nECE {metrics.ece(labels, probs, bins=10):.3f}"  # the recorded metric
        conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        idx = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
        full = [b for b in range(10) if (idx == b).any()]
        bars = ax.patches[: len(full)]  # accuracy bars first, then the gap bars
        for b, bar in zip(full, bars, strict=True):
            assert bar.get_x() == pytest.approx(b / 10) and bar.get_height() == pytest.approx(correct[idx == b].mean())
        stats = plots.reliability_bins(labels, probs, bins=10)
        weighted = np.nansum(stats["count"] * np.abs(stats["accuracy"] - stats["confidence"])) / len(labels)
        assert weighted == pytest.approx(metrics.ece(labels, probs, bins=10), abs=1e-12)
    # one legend names every mark: the bars, the hatched gap and the diagonal
    (legend,) = fig.legends
    names = sorted(t.get_text() for t in legend.get_texts())
    assert names == ["accuracy", "gap to mean confidence", "perfect calibration"]
    _check_png(plots.reliability_diagram(preds, tmp_path / "r.png"), tmp_path / "r.png")
    with pytest.raises(ValueError, match="shapes"):
        plots.reliability_diagram_figure({"x": (np.zeros(3, int), np.ones(3))})


def _display_points(artist) -> np.ndarray:
    """(n, 2) display coordinates of what an artist draws: a line's vertices, a collection's path vertices and
    offsets, a patch's corners (empty for artists that draw nothing)."""
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(artist, Line2D):
        xy = np.asarray(artist.get_xydata(), dtype=float)
        return artist.get_transform().transform(xy) if xy.size else np.empty((0, 2))
    if isinstance(artist, Collection):
        pts = [artist.get_transform().transform(p.vertices) for p in artist.get_paths() if len(p.vertices)]
        offsets = np.asarray(artist.get_offsets(), dtype=float)
        if offsets.size and len(artist.get_paths()) <= 1:
            pts.append(artist.get_offset_transform().transform(offsets))
        return np.concatenate(pts) if pts else np.empty((0, 2))
    if isinstance(artist, Patch):
        return artist.get_transform().transform(artist.get_path().vertices)  # includes the patch's own transform
    return np.empty((0, 2))


PLOT_CALLS = {
    "accuracy_vs_hyperparameter": lambda p: plots.accuracy_vs_hyperparameter(
        [dict(method=m, alpha=a, rho=a, seed=s, noise=n, metric="test_acc", value=0.5 + a / 2 + s / 100)
         for m in ("ls", "sam", "ivon") for a in (0.0, 0.5, 0.9) for s in range(2) for n in ("a", "b")],
        x={"ls": "alpha", "sam": "rho"}, baseline_methods=["ls", "sam"], band_methods=["ivon"], path=p),
    "image_grid": lambda p: plots.image_grid(np.random.default_rng(0).random((4, 6, 6)), [0.1, 0.2, 0.3, 0.4], p),
    "smoothed_label_bars": lambda p: plots.smoothed_label_bars(
        {"ivon": np.eye(3) * 0.9 + 0.03, "ls": np.eye(3) * 0.8 + 0.066}, p),
    "noise_histogram": lambda p: plots.noise_histogram(
        {"ivon": np.random.default_rng(0).random(200), "ls": np.full(200, 0.5)}, p),
    "line_plot": lambda p: plots.line_plot(np.arange(5), {"a": np.arange(5.0), "b": 4 - np.arange(5.0)}, p,
                                           xlabel="x", ylabel="y"),
    "bar_plot": lambda p: plots.bar_plot(["ERM", "LS alpha=0.1", "IVON ess=480"],
                                         {"test accuracy (clean; IVON: predictive)": [0.9, 0.95, 0.93],
                                          "validation accuracy (noisy labels)": [0.6, 0.62, 0.6]},
                                         p),
    "bar_plot_rows": lambda p: plots.bar_plot_rows(
        [dict(kappa=k, method=m, seed=s, metric="test_acc", value=0.9 - k) for k in (0.1, 0.3)
         for m in ("erm", "ivon") for s in range(2)], group="kappa", path=p),
    "reliability_diagram": lambda p: plots.reliability_diagram(_synthetic_predictions(), p),
}  # fmt: skip


def test_no_legend_overlaps_the_data_of_any_plot_function(tmp_path, monkeypatch):
    import inspect

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    public = {name for name, fn in inspect.getmembers(plots, inspect.isfunction)
              if fn.__module__.startswith(plots.__name__ + ".") and not name.startswith("_")
              and not name.endswith("_figure") and "path" in inspect.signature(fn).parameters
              and name != "save_figure"}  # fmt: skip
    assert public == set(PLOT_CALLS), "every plot function needs a case here"
    figures = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), real(fig, *a, **kw))[1])
    for name, call in PLOT_CALLS.items():
        figures.clear()
        call(tmp_path / f"{name}.png")
        (fig,) = figures
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                for artist in [*ax.lines, *ax.collections, *ax.patches]:
                    pts = _display_points(artist)
                    inside = (pts[:, 0] > box.x0 + 1) & (pts[:, 0] < box.x1 - 1) & (pts[:, 1] > box.y0 + 1) & (
                        pts[:, 1] < box.y1 - 1)  # fmt: skip
                    assert not inside.any(), f"{name}: the legend covers {artist} at {pts[inside][:3]}"
                area = ax.get_window_extent(renderer)  # and the legend stays outside the plot area itself
                assert not box.overlaps(area) or box.x0 >= area.x1 - 1, f"{name}: legend inside the axes"
        for ax in fig.axes:  # nor do an axis' tick labels overlap one another
            for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
                boxes = [t.get_window_extent(renderer) for t in ticks if t.get_visible() and t.get_text()]
                for a, b in zip(boxes, boxes[1:], strict=False):
                    assert not a.overlaps(b), f"{name}: tick labels overlap in {ax}"
