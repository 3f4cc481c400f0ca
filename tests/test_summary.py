"""The terminal summary (varsmooth.report.summary): the table that `varsmooth run` / `varsmooth train` print on stdout,
checked cell by cell against the files a real smoke run wrote."""

from __future__ import annotations

import numpy as np
import pytest

from varsmooth import cli
from varsmooth.io import read_csv, read_json, write_json
from varsmooth.report.summary import format_table, summarize, summary_rows

FAST = ["--epochs", "1", "--train-subset", "200", "--no-progress", "--device", "cpu", "--test-samples", "2"]


def _table(text: str) -> list[dict[str, str]]:
    """Parse the aligned table out of the summary text: the header line is the one above the rule of dashes."""
    lines = text.splitlines()
    rule = next(i for i, ln in enumerate(lines) if ln.startswith("---"))
    spans, pos = [], 0
    for dashes in lines[rule].split("  "):
        spans.append((pos, pos + len(dashes)))
        pos += len(dashes) + 2
    cut = [(a, b if k < len(spans) - 1 else None) for k, (a, b) in enumerate(spans)]
    header = [lines[rule - 1][a:b].strip() for a, b in cut]
    rows = []
    for ln in lines[rule + 1 :]:
        if not ln.strip() or ln.startswith(("files:", "report:", "claims", "suspects")):
            break
        rows.append(dict(zip(header, [ln[a:b].strip() for a, b in cut], strict=True)))
    return rows


def test_format_table_aligns_and_drops_empty_columns():
    text = format_table([{"method": "ERM", "acc": "93.2", "x": ""}, {"method": "IVON (pred.)", "acc": "9.1 ± 0.2",
                                                                     "x": "-"}])  # fmt: skip
    assert text.splitlines() == ["method              acc", "------------  ---------", "ERM                93.2",
                                 "IVON (pred.)  9.1 ± 0.2"]  # fmt: skip
    assert format_table([]) == ""


def test_train_prints_the_table_on_stdout(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "ivon", "--corruption", "symmetric:0.4", "--seed", "0", "--out", str(out), *FAST]
    assert cli.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    final = read_json(out / "final.json")
    rows = {r["method"]: r for r in _table(stdout)}
    assert set(rows) == {"ivon", "ivon (pred.)"}
    assert rows["ivon"]["accuracy %"] == f"{100 * final['test_acc']:.1f}"
    assert rows["ivon (pred.)"]["accuracy %"] == f"{100 * final['test_pred_acc']:.1f}"
    assert rows["ivon"]["NLL"] == f"{final['test_nll']:.3f}" and rows["ivon"]["ECE"] == f"{final['test_ece']:.3f}"
    assert rows["ivon (pred.)"]["ECE"] == f"{final['test_pred_ece']:.3f}"
    assert rows["ivon"]["chosen"] == f"ess={final['ess']:g}"
    assert stdout.rstrip().endswith(f"files: {out}")
    assert "accuracy %" not in stderr


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """noisy-accuracy's smoke preset cut to one corruption and 2 seeds (so that its claims have a verdict)."""
    out = tmp_path_factory.mktemp("summary") / "na"
    argv = [
        "run",
        "noisy-accuracy",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--no-progress",
        "--seeds",
        "0",
        "1",
        "--set",
        "corruptions=[symmetric:0.4]",
        "--set",
        "ess_factors=[auto]",
        "--set",
        "rhos=[0.1]",
    ]
    assert cli.main(argv) == 0
    return out


def test_run_prints_the_comparison_table_with_numbers_from_the_files(compare_dir, capsys):
    text = summarize(compare_dir)
    rows = _table(text)
    summary = read_json(compare_dir / "summary.json")
    assert len(rows) == len(summary["table"]) == len(summary_rows(compare_dir)) > 0
    results = read_csv(compare_dir / "results.csv")
    for row, t in zip(rows, summary["table"], strict=True):
        assert row["method"] == t["method"] and row["protocol"] == t["protocol"] and row["chosen"] == t["chosen"]
        assert row["accuracy %"] == f"{100 * t['mean']:.1f} ± {100 * t['std']:.1f}"
        # NLL / ECE: mean over the seeds of results.csv at the chosen setting
        method = {"ERM": "erm", "best LS": "ls", "best SAM": "sam"}.get(t["method"], "ivon")
        pred = "pred" in t["method"]
        hp = dict(p.split("=") for p in t["chosen"].split(", ") if "=" in p)
        match = [r for r in results if r["method"] == method
                 and all(float(r[k]) == float(v) if v != "auto" else r[k] == v for k, v in hp.items())]  # fmt: skip
        for col, metric in (("NLL", "test_pred_nll" if pred else "test_nll"),
                            ("ECE", "test_pred_ece" if pred else "test_ece")):  # fmt: skip
            vals = [float(r["value"]) for r in match if r["metric"] == metric]
            assert len(vals) == 2 and row[col] == f"{np.mean(vals):.3f}"
    assert "claims" in text and all(c["claim"] in text for c in summary.get("claims", []))


def test_demo_summary_rows_come_from_the_selected_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["run", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    rows = {r["method"]: r for r in _table(stdout)}
    assert {"ERM", "best LS", "IVON (mean)", "IVON (pred.)"} <= set(rows)
    summary = read_json(out / "summary.json")
    assert rows["ERM"]["accuracy %"] == f"{100 * summary['test_acc']['erm']:.1f}"
    assert rows["best LS"]["accuracy %"] == f"{100 * summary['test_acc']['ls']:.1f}"
    assert rows["IVON (mean)"]["accuracy %"] == f"{100 * summary['test_acc']['ivon_mean']:.1f}"
    assert rows["IVON (pred.)"]["accuracy %"] == f"{100 * summary['test_acc']['ivon_predictive']:.1f}"
    assert rows["best LS"]["chosen"] == f"alpha={summary['ls_alpha']:g}"
    ls = read_json(out / "runs" / f"ls-alpha{summary['ls_alpha']}" / "final.json")
    assert (rows["best LS"]["NLL"], rows["best LS"]["ECE"]) == (f"{ls['test_nll']:.3f}", f"{ls['test_ece']:.3f}")
    # the headline, then the verdict lines
    assert stdout.index(summary["headline"]) < stdout.index("claims (paper figure") < stdout.index("NOT TESTABLE")
    assert f"AUROC {summary['auroc_predictive']:.3f}" in stdout
    assert f"report: {out / 'report.html'}" in stdout


def test_failed_runs_are_counted_and_listed(tmp_path):
    failures = [{"name": "sam_rho1e+30_s0", "reason": "TrainingDiverged: training diverged at epoch 2, step 1",
                 "last_good_epoch": 1, "attempts": 1, "file": "runs/sam_rho1e+30_s0/failure.json"}]  # fmt: skip
    write_json(tmp_path / "summary.json", {"experiment": "noisy-accuracy", "runs_finished": 11, "runs_failed": 1,
                                           "runs_total": 12, "failures": failures})  # fmt: skip
    lines = summarize(tmp_path).splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("FAILED: 1 of 12 runs"))
    assert lines[k + 1] == ("  sam_rho1e+30_s0: TrainingDiverged: training diverged at epoch 2, step 1 "
                            "(last good epoch 1)")  # fmt: skip
    write_json(tmp_path / "summary.json", {"experiment": "noisy-accuracy", "runs_failed": 0, "runs_total": 12})
    assert "FAILED" not in summarize(tmp_path)
