"""varsmooth.plots: every function writes a readable PNG atomically; panels and plotted numbers are checked."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from varsmooth import plots
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

    monkeypatch.setattr(plots, "bar_plot", fake_bar_plot)
    plots.bar_plot_rows(rows, group="kappa", path=tmp_path / "b.png")
    assert seen["groups"] == ["0.1", "0.3"] and seen["options"]["xlabel"] == "kappa"
    for m in ("ivon", "ls"):
        for gi, k in enumerate((0.1, 0.3)):
            vals = [r["value"] for r in rows if r["method"] == m and r["kappa"] == k]
            assert seen["values"][m][gi] == pytest.approx(np.mean(vals), abs=1e-12)
            assert seen["errors"][m][gi] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
