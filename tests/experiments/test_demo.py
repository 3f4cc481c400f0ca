"""The default demo: its smoke preset runs through the CLI, writes its sections and report.html."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from varsmooth.cli import main
from varsmooth.commands.run import DEFAULT_EXPERIMENT
from varsmooth.experiments import presets
from varsmooth.experiments.demo import IVON_RUN, ess_text, selected
from varsmooth.io import read_csv


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["run", "demo", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out



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
    assert len(pngs) == 7 and html.count("data:image/png;base64,") == len(pngs)  # every figure embedded
    assert all(f"<figcaption>{name}" in html for name in pngs)
    for sub, files in {
        "accuracy": ("results.csv", "summary.json", "accuracy.png", "reliability.png"),
        "noise-gallery": ("results.csv", "summary.json", "noise.npz", "top_bottom.csv", "top_noise.png"),
    }.items():
        for name in files:
            assert (demo_dir / sub / name).stat().st_size > 0, f"{sub}/{name}"
    cfg = presets("demo")["smoke"]
    names = {p.name for p in (demo_dir / "runs").iterdir()}
    assert names == {"erm"} | {f"ls-alpha{a}" for a in cfg["ls_alphas"]} | {IVON_RUN}


def test_demo_selection_uses_validation_and_reports_it(demo_dir):
    rows = read_csv(demo_dir / "accuracy" / "results.csv")
    summary = json.loads((demo_dir / "summary.json").read_text())
    for method, crit in (("erm", "val_acc"), ("ls", "val_acc")):
        vals = {r["hyper_value"]: float(r["value"]) for r in rows if r["method"] == method and r["metric"] == crit}
        chosen = {r["hyper_value"] for r in rows if r["method"] == method and r["selected"] == "True"}
        assert len(chosen) == 1
        assert vals[chosen.pop()] == max(vals.values())
    test = {r["method"]: float(r["value"]) for r in rows if r["selected"] == "True" and r["metric"] == "test_acc"}
    assert summary["test_acc"]["erm"] == test["erm"] and summary["test_acc"]["ls"] == test["ls"]
    assert summary["test_acc"]["ivon_mean"] == test["ivon"]
    ls_chosen = next(r["hyper_value"] for r in rows if r["method"] == "ls" and r["selected"] == "True")
    assert float(ls_chosen) == summary["ls_alpha"]


def test_demo_ivon_ess_is_the_engines_auto_choice(demo_dir):
    """IVON runs once with ess "auto": the engine's successive halving on the noisy validation split picks ess,
    and the demo reports that choice and the search (grid, rungs' scores, cost) from the run's config.json."""
    summary = json.loads((demo_dir / "summary.json").read_text())
    run = json.loads((demo_dir / "runs" / IVON_RUN / "config.json").read_text())
    given = json.loads((demo_dir / "runs" / IVON_RUN / "result.json").read_text())["config"]["train"]
    assert given["method"] == "ivon" and given["ess"] == "auto" and "ess_factor" not in given  # nothing given
    record, search = run["ess_search"], summary["ivon_ess_search"]
    assert search == {k: record[k] for k in search}  # the engine's record, as written in the run folder
    assert set(search) >= {"grid", "rungs", "chosen_factor", "chosen_ess", "cost_runs"}
    factor = summary["ivon_ess_factor"]
    assert f"{factor:g}" in search["grid"] and factor == search["chosen_factor"]
    assert summary["ivon_ess"] == search["chosen_ess"] == run["config"]["ess"]
    assert search["chosen_ess"] == pytest.approx(factor * record["n_train"])
    last = search["rungs"][-1]
    assert last["kept"][0] == f"{factor:g}" and set(last["scores"]) <= set(search["grid"])
    assert all(np.isfinite(v["val_pred_nll"]) for v in search["rungs"][0]["scores"].values())
    assert len(search["rungs"][0]["scores"]) == len(search["grid"])  # every candidate scored in the first rung
    assert search["cost_runs"] == len(search["grid"]) <= 3  # every candidate trains the whole run
    rows = read_csv(demo_dir / "accuracy" / "results.csv")
    ivon = [r for r in rows if r["method"] == "ivon"]
    assert {r["hyper_value"] for r in ivon} == {str(factor)} and all(r["selected"] == "True" for r in ivon)
    acc = json.loads((demo_dir / "accuracy" / "summary.json").read_text())
    assert acc["ivon_selected"]["name"] == IVON_RUN and acc["ivon_selected"]["value"] == factor
    assert acc["ivon_ess_search"] == search


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


def test_selected_takes_the_first_of_equal_scores():
    recs = [
        {"method": "erm", "val_pred_acc": 0.9, "test_acc": 0.8, "seed": 0, "name": "e"},
        {"method": "ls", "alpha": 0.1, "val_pred_acc": 0.5, "test_acc": 0.8, "seed": 0, "name": "a"},
        {"method": "ls", "alpha": 0.3, "val_pred_acc": 0.7, "test_acc": 0.6, "seed": 0, "name": "b"},
        {"method": "ls", "alpha": 0.5, "val_pred_acc": 0.7, "test_acc": 0.9, "seed": 0, "name": "c"},
        {"method": "ivon", "ess_factor": 0.25, "val_pred_acc": 0.4, "test_acc": 0.7, "seed": 0, "name": "i"},
    ]
    best = selected(recs)
    assert {m: r["name"] for m, r in best.items()} == {"erm": "e", "ls": "b", "ivon": "i"}


def test_ess_text():
    assert [ess_text(f) for f in (1, 1.0, 0.0625, 0.25, 2)] == ["N", "N", "N/16", "N/4", "2N"]


def test_demo_headline_table_and_claims_are_its_own_numbers(demo_dir):
    """summary.json's headline quotes the selected runs' final.json accuracies and ECEs and the detector's AUROC
    (every number in it is one of those); its table is the comparison shape; its claim is Fig. 5's, untestable on
    one seed."""
    summary = json.loads((demo_dir / "summary.json").read_text())
    acc = json.loads((demo_dir / "accuracy" / "summary.json").read_text())
    final = {m: json.loads((demo_dir / "runs" / acc[f"{m}_selected"]["name"] / "final.json").read_text())
             for m in ("erm", "ls", "ivon")}  # fmt: skip
    t, text = summary["test_acc"], summary["headline"]
    assert (t["erm"], t["ls"], t["ivon_mean"], t["ivon_predictive"]) == (
        final["erm"]["test_acc"], final["ls"]["test_acc"], final["ivon"]["test_acc"], final["ivon"]["test_pred_acc"])
    parts = {
        "ls": f"LS (alpha {summary['ls_alpha']:g}) {100 * t['ls']:.1f}%",
        "ivon": f"IVON (ess auto -> {ess_text(summary['ivon_ess_factor'])}) "
        f"{100 * t['ivon_mean']:.1f}% (predictive {100 * t['ivon_predictive']:.1f}%)",
        "erm": f"ERM {100 * t['erm']:.1f}%",
    }
    assert all(p in text for p in parts.values()), text
    order = sorted(parts, key=lambda m: -final[m]["test_acc"])
    assert [text.index(parts[m]) for m in order] == sorted(text.index(parts[m]) for m in order)  # best first
    eces = sorted((final[m]["test_ece"], name) for m, name in (("erm", "ERM"), ("ls", "LS"), ("ivon", "IVON")))
    (lo, lo_name), (hi, hi_name) = eces[0], eces[-1]
    assert f"{hi_name}'s ECE {hi:.3f} is {hi / lo:.1f}x {lo_name}'s {lo:.3f}" in text
    assert text.endswith(f"find the flipped labels with AUROC {summary['auroc_predictive']:.3f}")
    quoted = {f"{100 * v:.1f}" for v in (t["erm"], t["ls"], t["ivon_mean"], t["ivon_predictive"])}
    quoted |= {f"{hi:.3f}", f"{lo:.3f}", f"{hi / lo:.1f}", f"{summary['auroc_predictive']:.3f}",
               f"{summary['ls_alpha']:g}"}  # fmt: skip
    assert set(re.findall(r"\d+\.\d+", text)) <= quoted, text

    table = {r["method"]: r for r in summary["table"]}
    assert list(table) == ["ERM", "best LS", "IVON (mean)", "IVON (pred.)"]
    assert all(r["protocol"] == "fair" and r["corruption"] == summary["corruption"] and r["n"] == 1
               for r in table.values())  # fmt: skip
    for label, m, pre in (("ERM", "erm", "test_"), ("best LS", "ls", "test_"), ("IVON (mean)", "ivon", "test_"),
                          ("IVON (pred.)", "ivon", "test_pred_")):  # fmt: skip
        row = table[label]
        assert row["mean"] == final[m][f"{pre}acc"]
        assert (row["nll"]["mean"], row["ece"]["mean"]) == (final[m][f"{pre}nll"], final[m][f"{pre}ece"])
    assert table["best LS"]["chosen"] == f"alpha={summary['ls_alpha']:g}"
    # one name for IVON's setting: the table's, the headline's and the claim's side
    assert table["IVON (mean)"]["chosen"] == f"ess auto -> {ess_text(summary['ivon_ess_factor'])}"
    assert table["IVON (mean)"]["chosen"] in text

    (c,) = summary["claims"]
    assert (c["figure"], c["verdict"], c["numbers"]["seeds"]) == ("Fig. 5", "not testable here", ["0"])
    assert (c["numbers"]["a_mean"], c["numbers"]["b_mean"]) == (t["ivon_mean"], t["ls"])
