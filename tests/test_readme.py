"""The README: its Python example runs as pasted, its measured table is the committed data, its commands are CI's,
and it (with the docs) states no version but the package's."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import pytest

import varsmooth
from varsmooth import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "docs" / "results"
CI_COMMAND = 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest'


def _section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else len(README)]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def test_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_quick_start_is_two_commands_and_the_second_is_what_ci_runs():
    block = re.search(r"```bash\n(.*?)```", _section("Quick start"), re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].startswith("pip install torch==2.13.0 -e . && varsmooth run")
    assert block[1] == CI_COMMAND
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == CI_COMMAND  # .ci/run ends with the README's test command, exactly


def test_python_example_runs_as_pasted_and_finds_flipped_labels(monkeypatch, tmp_path):
    """The README's Python block, run in a fresh namespace: nothing undefined, and what it prints holds."""
    blocks = re.findall(r"```python\n(.*?)```", _section("In Python"), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # it must write nothing; if it did, it would land here
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert "flagged" in out.getvalue()
    issues, flipped = namespace["issues"], namespace["flipped"].numpy()
    assert issues.shape == flipped.shape and issues.any()
    assert flipped[issues].mean() > 0.5  # most flagged labels were flipped (20% of all were)
    assert list(tmp_path.iterdir()) == []


def _readme_table() -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(folder, setting) of each row from the comment above the table, and the table's body cells."""
    section = _section("What is measured")
    comment = re.search(r"<!--(.*?)-->", section, re.S).group(1)
    keys = [tuple(line.split()) for line in comment.split("Rows, in order:")[1].strip().splitlines()]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| regime")
    ]
    return keys, rows


def _fair(folder: str, setting: str) -> tuple[dict[str, dict], list[dict]]:
    summary = json.loads((RESULTS / folder / "summary.json").read_text(encoding="utf-8"))
    table = {
        r["method"]: r
        for r in summary["table"]
        if r["protocol"] == "fair" and str(r.get("corruption", r.get("kappa"))) == setting
    }
    claims = [c for c in summary["claims"] if c["setting"].endswith(f"={setting}, fair protocol")]
    return table, claims


def test_measured_table_is_the_committed_data():
    keys, rows = _readme_table()
    assert len(keys) == len(rows) == 10
    methods = ["ERM", "best LS", "best SAM", "IVON (mean)", "IVON (pred.)"]
    for (folder, setting), cells in zip(keys, rows, strict=True):
        table, claims = _fair(folder, setting)
        assert [c.strip("*") for c in cells[2:7]] == [_pct(table[m]["mean"]) for m in methods], (folder, setting)
        best = max(methods, key=lambda m: table[m]["mean"])
        assert cells[2 + methods.index(best)].startswith("**"), (folder, setting)  # the row's best in bold
        (ls,) = [c for c in claims if "Label Smoothing" in c["claim"]]
        n = ls["numbers"]
        assert cells[7] == f"{100 * n['diff_mean']:+.1f} ± {100 * n['diff_std']:.1f}", (folder, setting)
        # the prose says IVON (mean) was `ess: auto` in every row
        assert table["IVON (mean)"]["chosen"].startswith("ess_factor=auto"), (folder, setting)


def test_measured_prose_is_the_committed_data():
    section = _section("What is measured")
    summaries = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(RESULTS.glob("*/summary.json"))]
    verdicts = [c["verdict"] for s in summaries for c in s["claims"]]
    agree, disagree = verdicts.count("agrees"), verdicts.count("disagrees")
    assert f"{agree} of the paper's {len(verdicts)} claim checks agree and {disagree} disagree" in section
    with open(RESULTS / "noisy-accuracy-memorize" / "results.csv", newline="") as f:
        erm = [float(r["value"]) for r in csv.DictReader(f) if r["method"] == "erm" and r["metric"] == "train_acc"]
    assert f"ERM fits {_pct(min(erm))}-{_pct(max(erm))}% of its training labels" in section

    def diff(folder, setting, which):
        (c,) = [c for c in _fair(folder, setting)[1] if which in c["claim"]]
        return f"{abs(100 * c['numbers']['diff_mean']):.1f}"

    sym = [("noisy-accuracy-cpu", f"symmetric:{r}") for r in ("0.2", "0.4", "0.5")]
    ls = sorted(float(diff(f, s, "Label Smoothing")) for f, s in [*sym, ("noisy-accuracy-cpu-full", "symmetric:0.5")])
    sam = sorted(float(diff(f, s, "SAM")) for f, s in sym)
    assert f"the best LS by {ls[0]:.1f}-{ls[-1]:.1f} points in short runs and in the long" in section
    assert f"best SAM by {sam[0]:.1f}-{sam[-1]:.1f} in short runs" in section
    short_pairflip = [f"+{diff('noisy-accuracy-cpu', f'pairflip:{r}', 'Label Smoothing')}" for r in ("0.2", "0.45")]
    assert f"level with LS at pair-flip ({short_pairflip[0]}, {short_pairflip[1]})" in section
    for number, (folder, setting, which) in {
        "23.8\n  points ahead of the best LS": ("noisy-accuracy-memorize", "pairflip:0.45", "Label Smoothing"),
        "27.8 ahead of the best SAM": ("noisy-accuracy-memorize", "pairflip:0.45", "SAM"),
        "6.2 ahead of the best LS on all": ("noisy-accuracy-cpu-full", "pairflip:0.45", "Label Smoothing"),
        "5.8 at the mean where the network memorizes": ("noisy-accuracy-memorize", "symmetric:0.5", "Label Smoothing"),
    }.items():
        assert number in section
        assert re.search(r"\d+\.\d", number).group(0) == diff(folder, setting, which), number


def test_readme_grid_worst_case_is_the_committed_data():
    summary = json.loads((RESULTS / "hessian-init-cpu" / "summary.json").read_text(encoding="utf-8"))
    acc = {r["ess_factor"]: r["mean"] for r in summary["table"] if r["h0"] == 0.05 and r["metric"] == "test_acc"}
    assert f"h0 = 0.05: {_pct(acc['auto'])}% against {_pct(acc[1.0])}% at ess N" in _section("What is measured")


def test_readme_search_count_is_the_committed_choices():
    """'kept the candidate with the best test accuracy in X of the Y searches' is the count in
    benchmarks/results/ess_choice.md (benchmarks/ess_choice.py over the sweeps' run folders: each candidate's scores
    and test accuracy are in its search record, not in results.csv), and Y is the committed sweeps' search count."""
    text = (ROOT / "benchmarks" / "results" / "ess_choice.md").read_text(encoding="utf-8").split("## Replay")[0]
    rows = re.findall(r"^\| noisy-accuracy-[\w-]+ \| [^|]+ \| val_acc \| (\d+) / (\d+) \|", text, re.M)
    hits, total = sum(int(h) for h, _ in rows), sum(int(t) for _, t in rows)
    assert f"in {hits} of the {total} searches of the noisy-accuracy rows" in _section("What is measured")
    searches = 0
    for folder in ("noisy-accuracy-cpu", "noisy-accuracy-cpu-full", "noisy-accuracy-memorize"):
        with open(RESULTS / folder / "results.csv", newline="") as f:
            searches += sum(r["metric"] == "ess_factor_chosen" for r in csv.DictReader(f))
    assert total == searches


def test_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


# ---- one version, from one place ----------------------------------------------------------------------------------


def _changelog_versions() -> tuple[list[str], list[str]]:
    """(released, unreleased) versions of CHANGELOG.md's ``## X.Y.Z`` headings, newest first."""
    heads = re.findall(r"^## (\d+\.\d+\.\d+)(.*)$", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    return [v for v, rest in heads if "unreleased" not in rest], [v for v, rest in heads if "unreleased" in rest]


def test_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib is Python >= 3.11)
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)  # no second copy of the number
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert re.search(r'^version = \{ attr = "varsmooth.__version__" \}', pyproject, re.M)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and out.getvalue().strip() == f"varsmooth {varsmooth.__version__}"
    released, _ = _changelog_versions()
    assert released and released[0] == varsmooth.__version__  # the newest released entry is the package


def test_readme_and_docs_state_no_other_version():
    """Every X.Y.Z (not a paper section, "Sec. 4.3.1"; and every 'varsmooth X.Y' / 'version X.Y') in the README
    and the docs pages is the package's
    version, a released one from the changelog, or the changelog's unreleased one marked "(unreleased" beside it."""
    released, unreleased = _changelog_versions()
    patterns = [r"(?<![=<>~\d.])(?<!Sec\. )(?<!Section )\b(\d+\.\d+\.\d+)\b(?!\.\d)",
                r"(?i)\b(?:varsmooth|version)\s+v?(\d+\.\d+(?:\.\d+)?)"]
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        stray = set()
        for m in (m for p in patterns for m in re.finditer(p, text)):
            v = m.group(1) if m.group(1).count(".") == 2 else m.group(1) + ".0"
            marked = text[m.end() :].startswith(" (unreleased")
            if v not in {varsmooth.__version__, *released} and not (v in unreleased and marked):
                stray.add(m.group(0))
        assert not stray, f"{page.relative_to(ROOT)} states {sorted(stray)}; the package is {varsmooth.__version__}"
