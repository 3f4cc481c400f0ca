"""noise-gallery and smoothed-labels: smoke presets through the CLI, ranking vs saved arrays, matrix rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varsmooth.cli import main
from varsmooth.errors import InputError
from varsmooth.experiments import resolve_preset
from varsmooth.experiments.gallery import Gallery, class_pair, ls_noise
from varsmooth.experiments.smoothed_labels import class_average, ls_matrix
from varsmooth.io import read_csv


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    assert main(["run", "noise-gallery", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def smoothed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoothed")
    assert main(["run", "smoothed-labels", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out



def test_gallery_smoke_writes_its_files(gallery_dir):
    for name in (
        "config.json",
        "summary.json",
        "results.csv",
        "noise.npz",
        "top_bottom.csv",
        "top_noise.png",
        "bottom_noise.png",
        "class_pair.png",
        "noise_histogram.png",
    ):
        assert (gallery_dir / name).stat().st_size > 0, name
    rows = read_csv(gallery_dir / "results.csv")
    assert set(rows[0]) == {"method", "metric", "value", "seed"}
    assert {r["method"] for r in rows} == {"ivon", "ls"}
    assert (gallery_dir / "runs" / "ivon" / "final.json").exists()


def test_gallery_ranks_consistently_with_saved_noise(gallery_dir):
    d = np.load(gallery_dir / "noise.npz")
    noise, labels = d["ivon_noise"], d["labels"]
    n, k = noise.shape
    mag = np.linalg.norm(noise, axis=1)
    np.testing.assert_allclose(d["ivon_magnitude"], mag, rtol=1e-12)
    np.testing.assert_allclose(d["ivon_label_noise"], noise[np.arange(n), labels], rtol=1e-12)
    # order: descending magnitude, ties by smaller row
    order = d["order"]
    assert sorted(order.tolist()) == list(range(n))
    assert np.all(np.diff(mag[order]) <= 0)
    rows = read_csv(gallery_dir / "top_bottom.csv")
    top = [r for r in rows if r["group"] == "top"]
    bottom = [r for r in rows if r["group"] == "bottom"]
    kk = json.loads((gallery_dir / "summary.json").read_text())["top_k"]
    assert len(top) == len(bottom) == kk
    assert [int(r["row"]) for r in top] == order[:kk].tolist()
    assert [int(r["row"]) for r in bottom] == order[::-1][:kk].tolist()
    for r in top + bottom:
        i = int(r["row"])
        assert float(r["ivon_magnitude"]) == pytest.approx(mag[i], rel=1e-12)
        assert int(r["label"]) == labels[i] and int(r["index"]) == d["index"][i]
    assert min(float(r["ivon_magnitude"]) for r in top) >= max(float(r["ivon_magnitude"]) for r in bottom)
    # LS's noise is alpha (u - e_y), identical for every example
    alpha = resolve_preset("noise-gallery", "smoke")["ls_alpha"]
    expect = alpha * (np.full((n, k), 1 / k) - np.eye(k)[labels])
    np.testing.assert_allclose(d["ls_noise"], expect, atol=1e-15)
    np.testing.assert_allclose(d["ls_magnitude"], alpha * np.sqrt(1 - 1 / k), rtol=1e-12)
    # expected softmax noise sums to 0 over classes (smoothed labels sum to 1)
    np.testing.assert_allclose(noise.sum(1), 0.0, atol=1e-6)
    summary = json.loads((gallery_dir / "summary.json").read_text())
    assert summary["ivon_noise_magnitude"]["max"] == pytest.approx(mag.max())
    pair = summary["class_pair"]
    cls_rows = np.flatnonzero(labels == pair["class"])
    assert pair["atypical_row"] == cls_rows[np.argmax(mag[cls_rows])]
    assert pair["regular_row"] == cls_rows[np.argmin(mag[cls_rows])]


def test_class_pair_and_ls_noise_on_a_toy_gallery():
    noise = np.array([[0.0, 0.0], [0.3, -0.3], [0.1, -0.1], [0.0, 0.0]])
    g = Gallery(np.arange(4), np.arange(4), np.array([0, 0, 0, 1]), None, noise, None, np.full((4, 2), 0.5), 1)
    assert class_pair(g, 0) == (0, 0, 1)
    assert class_pair(g, 1) is None  # one example only
    assert class_pair(g, None) is None
    np.testing.assert_allclose(ls_noise([0, 1], 2, 0.2), [[-0.1, 0.1], [0.1, -0.1]])
    assert g.order.tolist() == [1, 2, 0, 3]


def test_smoothed_labels_smoke_rows_sum_to_one(smoothed_dir):
    for name in (
        "results.csv",
        "summary.json",
        "matrices.npz",
        "matrices.csv",
        "smoothed_labels.png",
        "ivon_signed.png",
    ):
        assert (smoothed_dir / name).stat().st_size > 0, name
    m = np.load(smoothed_dir / "matrices.npz")
    cfg = resolve_preset("smoothed-labels", "smoke")
    k = m["ivon"].shape[0]
    alpha = cfg["ls_alpha"]
    # IVON: class averages of y + eps, eps summing to 0 -> rows sum to 1 (float32 softmax inside)
    np.testing.assert_allclose(m["ivon"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(m["ivon"] - np.eye(k), m["ivon_noise"], atol=1e-15)
    # LS: (1 - alpha) e_k + alpha / K exactly
    np.testing.assert_allclose(m["ls"], (1 - alpha) * np.eye(k) + alpha / k, atol=1e-15)
    np.testing.assert_allclose(m["ls"].sum(1), 1.0, atol=1e-12)
    # OLS: a row-stochastic soft-label matrix
    np.testing.assert_allclose(m["ols"].sum(1), 1.0, atol=1e-9)
    assert (m["ols"] >= 0).all()
    rows = read_csv(smoothed_dir / "matrices.csv")
    assert len(rows) == 3 * k * k
    r = next(r for r in rows if r["method"] == "ivon" and r["true_class"] == "2" and r["label"] == "3")
    assert float(r["value"]) == pytest.approx(m["ivon"][2, 3], rel=1e-12)
    res = read_csv(smoothed_dir / "results.csv")
    err = [float(r["value"]) for r in res if r["metric"] == "row_sum_max_error"]
    assert len(err) == 3 and max(err) < 1e-6


def test_class_average_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=50)
    s = rng.dirichlet(np.ones(4), size=50)
    m, counts = class_average(y, s, 4)
    for c in range(4):
        assert counts[c] == (y == c).sum()
        np.testing.assert_allclose(m[c], s[y == c].mean(0), rtol=1e-12)
    m, _ = class_average([0, 0], np.eye(3)[[0, 1]], 3)
    assert np.isnan(m[2]).all()  # a class without examples
    np.testing.assert_allclose(ls_matrix(4, 0.2).sum(1), 1.0)


def test_cpu_presets_need_a_data_dir(tmp_path, capsys):
    for exp in ("noise-gallery", "smoothed-labels"):
        code = main(["run", exp, "--preset", "cpu", "--out", str(tmp_path / exp)])
        assert code == 2
        err = capsys.readouterr().err
        assert "--data-dir" in err and "mnist" in err
    with pytest.raises(InputError, match="classes"):
        from varsmooth.experiments.smoothed_labels import plot_classes

        plot_classes([0, 12], 10, 0)


@pytest.mark.parametrize("exp", ["noise-gallery", "smoothed-labels", "demo"])
def test_every_preset_builds_valid_training_configs(exp):
    """Typos in a preset's training options (paper presets never run in the test suite) fail here."""
    import importlib

    from varsmooth.engine import TrainConfig
    from varsmooth.engine import resolve_config as resolve_train
    from varsmooth.experiments import experiments, presets

    module = importlib.import_module(f"varsmooth.experiments.{experiments()[exp]}")
    for name, cfg in presets(exp).items():
        cfg = {**cfg, "data_dir": cfg["data_dir"] or "unused"}  # the configs only; nothing is read
        configs = module.configs(cfg)
        assert configs and len({c["name"] for c in configs}) == len(configs), name
        for c in configs:
            resolved = resolve_train(TrainConfig.from_dict(c["train"]))  # InputError on an unknown or invalid option
            assert resolved.method == c["train"]["method"], name
            assert resolved.seed == cfg["seed"] and c.get("test_subset") == cfg.get("test_subset"), name
        assert {"smoke", "cpu", "paper"} <= set(presets(exp))
