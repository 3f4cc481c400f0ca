"""Smoke presets of the theory experiments: noise-curve (Fig. 2), theorems (Thm. 1, 2) and moons (blog)."""

import numpy as np
import pytest

from varsmooth import cli
from varsmooth import experiments as ex
from varsmooth.io import read_csv, read_json


def _run(exp_id, tmp_path, **overrides):
    out = tmp_path / exp_id
    summary = ex.run_experiment(exp_id, ex.resolve_preset(exp_id, "smoke", overrides), out, preset="smoke",
                                runtime=ex.Runtime(progress=False))  # fmt: skip
    for name in ("results.csv", "summary.json", "config.json"):
        assert (out / name).is_file()
    return out, summary


def test_noise_curve_smoke(tmp_path):
    out, summary = _run("noise-curve", tmp_path)
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["f_mean", "variance", "noise", "magnitude"]
    f = np.array([float(r["f_mean"]) for r in rows if float(r["variance"]) == 1.0])
    noise = np.array([float(r["noise"]) for r in rows if float(r["variance"]) == 1.0])
    mag = np.abs(noise)
    zero = int(np.flatnonzero(f == 0.0)[0])
    assert noise[zero] == 0.0
    left, right = int(np.argmax(mag[:zero])), zero + 1 + int(np.argmax(mag[zero + 1 :]))
    assert 0.5 < -f[left] < 3 and 0.5 < f[right] < 3 and mag[-1] < 0.1 * mag[right]
    assert summary["fig2_shape_ok"] and summary["fig2"]["peak_f_mean_pos"] == pytest.approx(f[right])
    assert (out / "noise_curve.png").stat().st_size > 1000 and (out / "noise_curve_signed.png").is_file()
    assert read_json(out / "summary.json")["fig2_shape_ok"] is True


def test_theorems_smoke(tmp_path):
    out, summary = _run("theorems", tmp_path)
    assert summary["all_within_tolerance"] and summary["max_abs_diff_overall"] <= 1e-10
    assert len(summary["max_abs_diff"]) == 8  # 2 datasets x 2 likelihoods x 2 algorithms
    rows = read_csv(out / "results.csv")
    assert {r["algorithm"] for r in rows} == {"gd", "newton"}
    assert max(float(r["max_abs_diff"]) for r in rows) <= 1e-10
    assert max(float(r["label_noise_rms"]) for r in rows if r["label_noise_rms"] != "nan") > 1e-3
    assert (out / "theorems_diff.png").is_file() and (out / "theorems_noise.png").is_file()


def test_cli_run_and_bad_config(tmp_path, capsys):
    assert cli.main(["run", "noise-curve", "--preset", "smoke", "--out", str(tmp_path / "nc")]) == 0
    assert (tmp_path / "nc" / "noise_curve.png").is_file()
    assert cli.main(["run", "noise-curve", "--preset", "smoke", "--set", "points=2", "--out", str(tmp_path / "x")]) == 2
    assert "points" in capsys.readouterr().err
    assert cli.main(["run", "theorems", "--preset", "smoke", "--set", "datasets=[iris]", "--out",
                     str(tmp_path / "y")]) == 2  # fmt: skip


def test_moons_smoke(tmp_path):
    out, summary = _run("moons", tmp_path)
    rows = read_csv(out / "results.csv")
    assert {r["model"] for r in rows} == {"logreg", "mlp"}
    assert len(rows) == 2 * summary["train_examples"] == 2 * 160
    mag = np.array([float(r["magnitude"]) for r in rows])
    n1 = np.array([float(r["noise_class1"]) for r in rows])
    np.testing.assert_allclose(mag, np.sqrt(2) * np.abs(n1), atol=1e-6)  # 2 classes: eps_0 = -eps_1 (float32 model)
    assert np.all(np.array([float(r["step_rms"]) for r in rows]) > 0)
    assert (out / "moons_noise.png").stat().st_size > 1000
    for model in ("logreg", "mlp"):
        assert (out / f"train-{model}" / "final.json").is_file()  # trained by the engine, not here
        s = summary["models"][model]
        assert 0.5 <= s["test_acc"] <= 1 and s["mean_magnitude"] > 0 and s["spearman_mc_vs_linearized_rms"] > 0.5
