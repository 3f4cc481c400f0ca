"""The default demo: its smoke preset runs through the CLI, writes its sections and report.html."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from varsmooth.cli import main
from varsmooth.commands.run import DEFAULT_EXPERIMENT
from varsmooth.experiments import presets
from varsmooth.experiments.demo import select


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["run", "demo", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_default_run_is_the_demo_on_bundled_data():
    assert DEFAULT_EXPERIMENT == "demo"
    table = presets("demo")
    default = table[next(iter(table))]  # `varsmooth run` with no argument uses the first preset
    assert default["dataset"] == "mnist-subset" and default["data_dir"] is None
    assert default["corruption"] == "symmetric:0.4"
    assert {"smoke", "cpu", "paper"} <= set(table)


def test_demo_smoke_writes_sections_and_report(demo_dir):
    html = (demo_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "demo/accuracy" in html and "demo/noise-gallery" in html
    pngs = sorted(p.relative_to(demo_dir).as_posix() for p in demo_dir.glob("*/*.png"))
    assert len(pngs) == 6 and html.count("data:image/png;base64,") == len(pngs)  # every figure embedded
    assert all(f"<figcaption>{name}" in html for name in pngs)
    for sub, files in {
        "accuracy": ("results.csv", "summary.json", "accuracy.png"),
        "noise-gallery": ("results.csv", "summary.json", "noise.npz", "top_bottom.csv", "top_noise.png"),
    }.items():
        for name in files:
            assert (demo_dir / sub / name).stat().st_size > 0, f"{sub}/{name}"
    cfg = presets("demo")["smoke"]
    names = {p.name for p in (demo_dir / "runs").iterdir()}
    assert names == {"erm"} | {f"ls-alpha{a}" for a in cfg["ls_alphas"]} | {f"ivon-ess{f}" for f in cfg["ess_factors"]}


def test_demo_selection_uses_validation_and_reports_it(demo_dir):
    rows = _rows(demo_dir / "accuracy" / "results.csv")
    summary = json.loads((demo_dir / "summary.json").read_text())
    for method, crit in (("ls", "val_acc"), ("ivon", "val_pred_acc")):
        vals = {r["hyper_value"]: float(r["value"]) for r in rows if r["method"] == method and r["metric"] == crit}
        chosen = {r["hyper_value"] for r in rows if r["method"] == method and r["selected"] == "True"}
        assert len(chosen) == 1
        assert vals[chosen.pop()] == max(vals.values())
    test = {r["method"]: float(r["value"]) for r in rows if r["selected"] == "True" and r["metric"] == "test_acc"}
    assert summary["test_acc"]["erm"] == test["erm"] and summary["test_acc"]["ls"] == test["ls"]
    assert summary["test_acc"]["ivon_mean"] == test["ivon"]


def test_demo_flipped_fraction_matches_saved_arrays(demo_dir):
    d = np.load(demo_dir / "noise-gallery" / "noise.npz")
    summary = json.loads((demo_dir / "summary.json").read_text())
    k = summary["top_k"]
    flipped = d["labels"] != d["clean_labels"]
    np.testing.assert_array_equal(flipped, d["is_noisy"])
    assert summary["flipped_rate"] == pytest.approx(flipped.mean())
    assert summary["flipped_frac_top_k"] == pytest.approx(flipped[d["order"][:k]].mean())
    # the posterior predictive's suspicion 1 - p_pred[y], p_pred = p_mean - eps (the same draws)
    p_pred = d["probs_mean"] - d["ivon_noise"]
    sus = 1 - p_pred[np.arange(len(flipped)), d["labels"]]
    np.testing.assert_allclose(d["predictive_suspicion"], sus, rtol=1e-12)
    top = np.lexsort((np.arange(len(sus)), -sus))[:k]
    assert summary["flipped_frac_top_k_predictive"] == pytest.approx(flipped[top].mean())
    # the realised corruption rate of the symmetric 40% corruption on the training split
    assert 0.25 < flipped.mean() < 0.55


def test_select_takes_the_first_of_equal_scores():
    rows = [
        {"method": "ls", "v": 0.5, "name": "a"},
        {"method": "ls", "v": 0.7, "name": "b"},
        {"method": "ls", "v": 0.7, "name": "c"},
        {"method": "erm", "v": 0.9, "name": "d"},
    ]
    assert select(rows, "ls", "v")["name"] == "b"
