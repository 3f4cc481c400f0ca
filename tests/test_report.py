"""varsmooth.report: seed aggregation, Markdown tables, the self-contained report.html, `varsmooth report`."""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from varsmooth import plots
from varsmooth.commands import report as report_cmd
from varsmooth.errors import InputError
from varsmooth.io import read_csv, read_json, versions, write_csv, write_json
from varsmooth.metrics import aggregate
from varsmooth.report.html import write_report
from varsmooth.report.tables import format_value, markdown_table, mean_std, results_table

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)


def test_aggregate_matches_numpy_also_after_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        dict(method=m, alpha=a, seed=s, metric="test_acc", value=rng.normal())
        for m in ("ls", "sam")
        for a in (0.1, 0.5)
        for s in range(5)
    ]
    rows.append(dict(method="ls", alpha=0.1, seed=9, metric="test_acc", value=""))  # a missing value is skipped
    write_csv(tmp_path / "r.csv", rows)
    for source in (rows, read_csv(tmp_path / "r.csv")):
        agg = aggregate(source)
        assert [(a["method"], str(a["alpha"])) for a in agg] == [
            ("ls", "0.1"),
            ("ls", "0.5"),
            ("sam", "0.1"),
            ("sam", "0.5"),
        ]
        for a in agg:
            vals = [
                r["value"]
                for r in rows
                if r["method"] == a["method"] and str(r["alpha"]) == str(a["alpha"]) and r["value"] != ""
            ]
            assert a["n"] == 5 == len(vals)
            assert a["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
            assert a["std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    single = aggregate([dict(method="x", seed=0, value=0.5)])
    assert single == [{"method": "x", "mean": 0.5, "std": 0.0, "n": 1}]
    by_method = aggregate(rows, keys=["method"])
    assert [a["n"] for a in by_method] == [10, 10]


def test_markdown_table_format():
    rows = [
        {"method": "ls", "alpha": 0.1, "acc": "0.9 ± 0.01", "note": "a|b"},
        {"method": "ivon", "alpha": "", "acc": "0.95 ± 0.02"},
    ]
    assert markdown_table(rows, ["method", "alpha", "acc", "note"]) == (
        "| method | alpha | acc | note |\n"
        "| --- | ---: | ---: | --- |\n"
        "| ls | 0.1 | 0.9 ± 0.01 | a\\|b |\n"
        "| ivon |  | 0.95 ± 0.02 |  |\n"
    )


def test_format_value_and_mean_std():
    assert format_value(0.123456789) == "0.1235"
    assert format_value("0.123456789") == "0.1235" and format_value("7") == "7" and format_value("none") == "none"
    assert format_value(True) == "True" and format_value([1, 2]) == "[1, 2]" and format_value(None) == ""
    assert format_value(np.float32(0.5)) == "0.5"
    assert mean_std(0.807, 0.0022, 3) == "0.8070 ± 0.0022"
    assert mean_std(0.5, 0.15, 3) == "0.50 ± 0.15"
    assert mean_std(0.81, np.std([0.80, 0.81, 0.82], ddof=1), 3) == "0.810 ± 0.010"  # std 0.01000...0009
    assert mean_std(0.81, 0.00999996, 3) == "0.810 ± 0.010"
    assert mean_std(0.9, 0.5, 1) == "0.9"


def test_results_table_aggregates_or_truncates():
    rows = [dict(method="ls", seed=s, value=v) for s, v in enumerate((0.8, 0.9, 1.0))]
    table, cols, note = results_table(rows)
    assert cols == ["method", "mean ± std", "n"] and table == [{"method": "ls", "mean ± std": "0.90 ± 0.10", "n": 3}]
    assert "seed" in note
    raw = [dict(f_mean=i, variance=1.0, eps=i / 10) for i in range(30)]
    table, cols, note = results_table(raw, max_rows=10)
    assert cols == ["f_mean", "variance", "eps"] and len(table) == 10 and "first 10 of 30" in note


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """An output folder like the demo's: two experiment folders, a figure-only folder, a loose PNG, a sweep."""
    out = tmp_path_factory.mktemp("demo")
    rng = np.random.default_rng(0)
    acc = out / "noisy-accuracy"
    rows = [
        dict(method="ls", alpha=a, noise="symmetric:0.2", seed=s, metric="test_acc", value=0.8 + a / 10 + s / 100)
        for a in (0.0, 0.5)
        for s in range(3)
    ]
    rows += [
        dict(method="ivon", alpha="", noise="symmetric:0.2", seed=s, metric="test_acc", value=0.9 + s / 100)
        for s in range(3)
    ]
    write_csv(acc / "results.csv", rows)
    write_json(
        acc / "config.json",
        {
            "experiment": "noisy-accuracy",
            "preset": "smoke",
            "config": {"dataset": "digits", "seeds": [0, 1, 2], "opt": {"lr": 0.1}},
            "versions": versions(),
        },
    )
    write_json(
        acc / "summary.json", {"experiment": "noisy-accuracy", "preset": "smoke", "best_ls": 0.86, "wall_time_s": 1.5}
    )
    plots.accuracy_vs_hyperparameter(
        rows, x="alpha", baseline_methods=["ls"], band_methods=["ivon"], path=acc / "accuracy.png"
    )
    plots.line_plot([0, 1], {"a": [0, 1]}, acc / "runs" / "r0" / "curve.png", xlabel="x", ylabel="y")  # not shown
    write_json(acc / "runs" / "r0" / "result.json", {"config": {}, "metrics": {}})
    theory = out / "noise-curve"
    write_csv(theory / "results.csv", [dict(f_mean=f, variance=1.0, eps=abs(np.tanh(f)) / 4) for f in range(-40, 40)])
    write_json(
        theory / "config.json",
        {"experiment": "noise-curve", "preset": "cpu", "config": {"v": [1, 4]}, "versions": versions()},
    )
    plots.line_plot(np.arange(5), {"v=1": np.arange(5) ** 2}, theory / "curve.png", xlabel="f", ylabel="eps")
    plots.image_grid(rng.normal(size=(4, 8, 8)), rng.random(4), out / "gallery" / "grid.png", ncols=2)
    plots.noise_histogram({"ivon": rng.random(50)}, out / "overview.png")
    return out


def _pngs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.png") if "runs" not in p.relative_to(out).parts)


def test_report_embeds_every_png_and_table(results_dir):
    path = write_report(results_dir)
    assert path == results_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    shown = _pngs(results_dir)
    assert len(shown) == 4
    for png in shown:
        assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in page
    runs_png = results_dir / "noisy-accuracy" / "runs" / "r0" / "curve.png"
    assert base64.b64encode(runs_png.read_bytes()).decode() not in page
    assert page.count("<img ") == 4
    # no external resources: every src/href is a data URI or an in-page anchor
    assert not [u for u in re.findall(r'(?:src|href)="([^"]*)"', page) if not u.startswith(("data:", "#"))]
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{anchor}"' in page
    # tables: aggregated results (mean ± std over 3 seeds), raw theory rows cut at max_rows, summary, config
    assert "0.810 ± 0.010" in page and "0.860 ± 0.010" in page and "0.910 ± 0.010" in page
    assert "showing the first" not in page  # 80 rows < max_rows = 100: nothing cut
    assert page.count("<table") >= 2 * 3 + 1
    for text in ("best_ls", "opt.lr", "digits", "noise-curve", "1 finished runs", "Contents", "symmetric:0.2"):
        assert text in page
    md = (results_dir / "results.md").read_text(encoding="utf-8")
    assert "## noisy-accuracy" in md and "| method | alpha | noise | metric | mean ± std | n |" in md
    assert "| ls | 0.5 | symmetric:0.2 | test_acc | 0.860 ± 0.010 | 3 |" in md


def test_report_truncates_long_tables(results_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    page = write_report(out, max_rows=20, title="T").read_text(encoding="utf-8")
    assert "showing the first 20 of 80 rows" in page and "<title>T</title>" in page
    assert page.count("<tr>") < 200


def test_report_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty" / "runs" / "r0").mkdir(parents=True)
    plots.line_plot([0, 1], {"a": [0, 1]}, tmp_path / "empty" / "runs" / "r0" / "x.png", xlabel="x", ylabel="y")
    with pytest.raises(InputError, match="holds no results"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.html").exists()


def _cli(argv):
    parser = argparse.ArgumentParser(prog="varsmooth report")
    report_cmd.add_arguments(parser)
    return report_cmd.main(parser.parse_args(argv))


def test_cli(results_dir, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    (out / "report.html").unlink(missing_ok=True)
    assert _cli([str(out), "--max-rows", "5"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    assert "showing the first 5 of 80 rows" in (out / "report.html").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="no such folder"):
        _cli([str(tmp_path / "nope")])
    with pytest.raises(InputError, match="max-rows"):
        _cli([str(out), "--max-rows", "0"])


def _chromium(profile: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _probe(html_file: Path, profile: Path) -> dict[str, int]:
    """What the report's load script wrote on <body>: images decoded and present, tables with no filled cell,
    rows of the claims table."""
    dom = _chromium(profile, "--dump-dom", html_file.as_uri())
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, f"the load script did not run; chromium printed: {dom[:300]!r}"
    empty, claims = re.search(r'data-empty-tables="(\d+)"', dom), re.search(r'data-claim-rows="(\d+)"', dom)
    return {"loaded": int(loaded.group(1)), "images": int(loaded.group(2)), "empty_tables": int(empty.group(1)),
            "claim_rows": int(claims.group(1))}  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install -y chromium) for the rendering check")
def test_every_figure_renders_in_headless_chromium(results_dir, tmp_path):
    page = write_report(results_dir)
    probe = _probe(page, tmp_path / "profile")
    assert (probe["loaded"], probe["images"]) == (4, 4) and len(_pngs(results_dir)) == 4
    assert probe["empty_tables"] == 0 and probe["claim_rows"] == 0  # no experiment here states a claim
    # the probe must notice a figure that does not decode (corrupt one embedded PNG) and an empty table
    html_text = page.read_text(encoding="utf-8")
    start = html_text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(html_text[:start] + "AAAA" + html_text[start + 40 :].replace(
        "<tbody>", "<tbody></tbody></table><table><tbody><tr><td> </td></tr>", 1), encoding="utf-8")  # fmt: skip
    probe = _probe(broken, tmp_path / "profile")
    assert (probe["loaded"], probe["images"]) == (3, 4) and probe["empty_tables"] == 1


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install -y chromium) for the rendering check")
def test_demo_report_in_headless_chromium_with_a_screenshot(tmp_path):
    """The demo smoke run's report: every image decodes, no table is empty, the demo's headline and then the claims
    table lead the page (one row per stated claim); a screenshot of the first screen is kept (tmp dir;
    docs/figures/ when VARSMOOTH_SAVE_SCREENSHOT=1)."""
    from varsmooth.cli import main

    out = tmp_path / "demo"
    assert main(["run", "demo", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    page = out / "report.html"
    shot = tmp_path / "report_screenshot.png"
    _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1000", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("VARSMOOTH_SAVE_SCREENSHOT") == "1":
        target = Path(__file__).resolve().parents[1] / "docs" / "figures" / "report_screenshot.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    probe = _probe(page, tmp_path / "profile")
    assert probe["images"] == len(_pngs(out)) > 0 and probe["loaded"] == probe["images"], probe
    assert probe["empty_tables"] == 0, probe
    claims = [c for p in sorted(out.rglob("summary.json")) if "runs" not in p.relative_to(out).parts
              for c in read_json(p).get("claims") or []]  # fmt: skip
    assert probe["claim_rows"] == len(claims), f"the claims table is missing or incomplete: {probe}"
    # the answer on the first screen: the demo's headline, then the claims table, before the contents
    headline = read_json(out / "summary.json")["headline"]
    dom = html.unescape(_chromium(tmp_path / "profile", "--dump-dom", page.as_uri()))
    assert claims and headline in dom, "the demo's headline or claims are missing"
    assert dom.index(headline) < dom.index('id="claims"') < dom.index("<nav>")


def test_claims_table_leads_the_page_and_results_md(results_dir, tmp_path):
    from varsmooth.experiments.claims import claim, outperforms, spread_at_most

    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    summary = read_json(out / "noisy-accuracy" / "summary.json")
    summary["claims"] = [
        claim("IVON outperforms the best Label Smoothing", "Fig. 5", "corruption=symmetric:0.2, fair protocol",
              "outperforms", outperforms({0: 0.95, 1: 0.93}, {0: 0.93, 1: 0.92})),
        claim("h0 spread", "Fig. 10", "x", "spread_at_most", spread_at_most({0.1: {0: 0.9}, 1.0: {0: 0.5}}, limit=0.1)),
    ]  # fmt: skip
    write_json(out / "noisy-accuracy" / "summary.json", summary)
    page = write_report(out).read_text(encoding="utf-8")
    assert page.index('id="claims"') < page.index("<nav>")  # before the contents and every section
    claims = page[page.index('id="claims"') : page.index("</section>", page.index('id="claims"'))]
    assert claims.count("<tr>") == 3 and "v-agrees" in claims and "not testable here" in claims
    assert "94.0 vs 92.5, diff +1.5 ± 0.7 points, 2 seed(s)" in claims
    md = (out / "results.md").read_text(encoding="utf-8")
    assert md.index("## Paper claims") < md.index("## noisy-accuracy")
    assert "| noisy-accuracy | Fig. 5 | IVON outperforms the best Label Smoothing |" in md


def _comparison_summary(out: Path) -> dict:
    """A comparison's summary table (compare_table over synthetic runs: 2 settings, 3 seeds, both protocols)."""
    from varsmooth.experiments.comparison import write_table
    from varsmooth.experiments.selection import compare_table

    rng = np.random.default_rng(5)

    def rec(method, corruption, seed, **hp):
        acc = rng.uniform(0.6, 0.9)
        return dict(dict.fromkeys(("alpha", "rho", "ess_factor", "h0"), ""), method=method, corruption=corruption,
                    seed=seed, **hp, test_acc=acc, val_acc=acc - 0.05, test_pred_acc=acc + 0.01,
                    val_pred_acc=acc - 0.04, test_nll=rng.uniform(0.3, 1.0), test_ece=rng.uniform(0.01, 0.3),
                    test_pred_nll=rng.uniform(0.3, 1.0), test_pred_ece=rng.uniform(0.01, 0.3))  # fmt: skip

    recs = []
    for c in ("symmetric:0.2", "pairflip:0.4"):
        for s in range(3):
            recs += [rec("erm", c, s), *(rec("ls", c, s, alpha=a) for a in (0.1, 0.5)), rec("sam", c, s, rho=0.05)]
            recs += [rec("ivon", c, s, ess_factor=1.0, h0=h) for h in (0.1, 1.0)]
    fixed = {c: {"ess_factor": 1.0, "h0": 0.1} for c in ("symmetric:0.2", "pairflip:0.4")}
    table = compare_table(recs, setting="corruption", ivon_fixed=fixed, protocols=["paper", "fair"])
    return {"experiment": "noisy-accuracy", "table": write_table(out, table, "corruption")}


def test_pivots_hold_the_summary_numbers_with_the_row_best_in_bold(results_dir, tmp_path):
    from varsmooth.report.tables import percent_text, pivot_tables

    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    summary = {**read_json(out / "noisy-accuracy" / "summary.json"), **_comparison_summary(tmp_path)}
    summary["figures"] = ["accuracy.png"]
    write_json(out / "noisy-accuracy" / "summary.json", summary)
    pivots = pivot_tables(summary["table"])
    assert [p.title for p in pivots] == ["test accuracy %", "test NLL", "test ECE"]
    methods = ["ERM", "best LS", "best SAM", "IVON (mean)", "IVON (pred.)"]
    for pivot, key in zip(pivots, (None, "nll", "ece"), strict=True):
        assert pivot.columns == ["corruption", "protocol", *methods]
        assert len(pivot.rows) == 2 * 2  # settings x protocols
        for row, bold in zip(pivot.rows, pivot.bold, strict=True):
            here = {r["method"]: r if key is None else r[key] for r in summary["table"]
                    if r["corruption"] == row["corruption"] and r["protocol"] == row["protocol"]}  # fmt: skip
            text = {m: percent_text(here[m]) if key is None else here[m]["text"] for m in methods}
            assert {m: row[m] for m in methods} == text  # the summary's numbers
            best = (max if key is None else min)(here[m]["mean"] for m in methods)
            assert bold == {m for m in methods if here[m]["mean"] == best} and len(bold) == 1
    page = write_report(out).read_text(encoding="utf-8")
    section = page[page.index('<section id="sec-noisy-accuracy"') :]
    section = section[: section.index("</section>")]
    first = section[section.index('<table class="pivot">') : section.index("</table>", section.index("pivot"))]
    html_rows = re.findall(r"<tr>(.*?)</tr>", first)[1:]
    for row, bold in zip(pivots[0].rows, pivots[0].bold, strict=True):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", html_rows.pop(0))
        assert cells[2:] == [f"<b>{row[m]}</b>" if m in bold else row[m] for m in methods]
    # order: the experiment's pivots, then its main figure, then everything else collapsed
    assert section.index('<table class="pivot">') < section.index("<img ") < section.index("<details")
    assert section.index("<details") < section.index("opt.lr")  # config inside the collapsed part
    md = (out / "results.md").read_text(encoding="utf-8")
    row, bold = pivots[0].rows[0], pivots[0].bold[0]
    cells = " | ".join(f"**{row[m]}**" if m in bold else row[m] for m in methods)
    assert f"| {row['corruption']} | {row['protocol']} | {cells} |" in md
    assert md.index("**test accuracy %**") < md.index("**test NLL**") < md.index("| method | alpha | noise |")


def test_report_shows_the_failed_runs(tmp_path):
    failures = [{"name": "sam_rho1e+30_s1", "reason": "TrainingDiverged: loss = nan", "last_good_epoch": 3,
                 "attempts": 2}]  # fmt: skip
    write_json(tmp_path / "summary.json", {"experiment": "noisy-accuracy", "runs_failed": 1, "runs_total": 12,
                                           "failures": failures})  # fmt: skip
    page = write_report(tmp_path).read_text()
    assert "Failed runs" in page and "1 of 12 runs failed" in page
    row = re.search(r"<table class=failed>.*?<tbody><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", row) == ["sam_rho1e+30_s1", "TrainingDiverged: loss = nan", "3", "2"]
    assert "**Failed runs**" in (tmp_path / "results.md").read_text()


def test_headline_once_and_no_absolute_path(tmp_path):
    """An experiment's headline is stated once (at the top, linked to its section), and the page names the results
    folder, not its absolute path: every path in it is relative to the folder."""
    out = tmp_path / "results"
    write_json(out / "exp" / "summary.json", {"experiment": "exp", "headline": "IVON 84.4% vs LS 89.6%"})
    page = write_report(out).read_text(encoding="utf-8")
    assert page.count("IVON 84.4% vs LS 89.6%") == 1
    assert str(tmp_path) not in page and "<code>results</code>" in page
    assert (out / "results.md").read_text(encoding="utf-8").count("IVON 84.4% vs LS 89.6%") == 1
