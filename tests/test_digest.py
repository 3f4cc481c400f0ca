"""The results digest (varsmooth.report.digest): claims and pivots from summary.json into a Markdown file between
markers; and the digest in docs/results.md equals the one regenerated from the committed results in docs/results."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from varsmooth import cli
from varsmooth.errors import InputError
from varsmooth.experiments.claims import claim, outperforms
from varsmooth.io import write_json
from varsmooth.report.digest import BEGIN, END, marked_block, results_digest, sync_markdown

ROOT = Path(__file__).resolve().parents[1]


def _cell(mean, std, n=3):
    return {"mean": mean, "std": std, "n": n, "text": f"{mean:.4f} ± {std:.4f}"}


def _experiment(folder: Path, *, ivon=(0.90, 0.92, 0.91), ls=(0.85, 0.86, 0.88)) -> None:
    """A comparison experiment's summary.json and config.json, as varsmooth.experiments write them."""
    seeds = range(len(ivon))
    verdict = outperforms(dict(zip(seeds, ivon, strict=True)), dict(zip(seeds, ls, strict=True)))
    table = []
    for protocol in ("paper", "fair"):
        for method, accs in (("best LS", ls), ("IVON (mean)", ivon)):
            mean = sum(accs) / len(accs)
            table.append({"corruption": "symmetric:0.5", "protocol": protocol, "method": method, "chosen": "-",
                          **_cell(mean, 0.01), "nll": _cell(1 - mean, 0.02), "ece": _cell(mean / 10, 0.0)})  # fmt: skip
    folder.mkdir(parents=True)
    claims = [claim("IVON outperforms LS", "Fig. 5", "s", "rule", verdict)]
    write_json(
        folder / "summary.json", {"experiment": "noisy-accuracy", "preset": "cpu", "table": table, "claims": claims}
    )
    write_json(folder / "config.json", {"experiment": "noisy-accuracy", "preset": "cpu", "order": 5, "config": {}})


def _is_table_well_formed(block: str) -> bool:
    """Every Markdown table in ``block`` has the same number of cells on each of its lines."""
    for table in re.findall(r"(?:^\|.*\|$\n?)+", block, flags=re.M):
        counts = {len(re.split(r"(?<!\\)\|", line.strip())) for line in table.strip().splitlines()}
        if len(counts) != 1:
            return False
    return True


def test_digest_holds_the_claims_and_pivots(tmp_path):
    _experiment(tmp_path / "a")
    digest = results_digest(tmp_path)
    row = "| noisy-accuracy (cpu) | Fig. 5 | IVON outperforms LS | s | agrees | 91.0 vs 86.3, diff +4.7 ± 1.5"
    assert row in digest
    assert "**91.0 ± 1.0**" in digest  # the best of each row in bold, in percent
    assert digest.count("| symmetric:0.5 | fair |") == 3  # accuracy, NLL, ECE under the fair protocol
    assert digest.count("| symmetric:0.5 | paper |") == 1  # the paper protocol in the accuracy pivot only
    assert _is_table_well_formed(digest)


def test_digest_verdict_follows_the_data(tmp_path):
    _experiment(tmp_path / "a", ivon=(0.80, 0.81, 0.82))
    assert "| disagrees |" in results_digest(tmp_path)


def test_sync_replaces_only_the_marked_block(tmp_path):
    _experiment(tmp_path / "res")
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nprose before\n\n{BEGIN}\nstale numbers\n{END}\n\nprose after\n")
    assert sync_markdown(doc, results_digest(tmp_path / "res")) is True
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose before\n\n") and text.endswith(f"{END}\n\nprose after\n")
    assert "stale numbers" not in text and "IVON outperforms LS" in text
    assert sync_markdown(doc, results_digest(tmp_path / "res")) is False  # idempotent
    assert doc.read_text() == text


@pytest.mark.parametrize("body", ["no markers\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{BEGIN}\n{END}\n"])
def test_sync_refuses_a_file_without_one_pair_of_markers(tmp_path, body):
    doc = tmp_path / "doc.md"
    doc.write_text(body)
    with pytest.raises(InputError, match="must hold the line"):
        sync_markdown(doc, "x\n")
    assert doc.read_text() == body


def test_cli_into(tmp_path, capsys):
    _experiment(tmp_path / "res")
    doc = tmp_path / "doc.md"
    doc.write_text(f"{BEGIN}\n{END}\n")
    assert cli.main(["report", str(tmp_path / "res"), "--into", str(doc)]) == 0
    assert "IVON outperforms LS" in doc.read_text()
    assert not (tmp_path / "res" / "report.html").exists()  # --into writes the digest only
    before = doc.read_text()
    assert cli.main(["report", str(tmp_path / "empty-missing"), "--into", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varsmooth: error:") and err.count("\n") == 1
    assert doc.read_text() == before


def test_accuracy_cells_are_percent():
    from varsmooth.report.tables import percent_text

    assert percent_text({"mean": 0.95134, "std": 0.00131, "n": 3}) == "95.1 ± 0.1"
    assert percent_text({"mean": 0.95134, "std": 0.0, "n": 1}) == "95.1"  # one seed has no spread


def test_results_page_is_the_committed_data():
    """The results page's digest is exactly what the committed summaries in docs/results give: prose and data agree."""
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    start, end = marked_block(page, name="docs/results.md")
    expected = "\n\n" + results_digest(ROOT / "docs" / "results").strip("\n") + "\n\n"
    fix = "run `varsmooth report docs/results --into docs/results.md`"
    assert page[start:end] == expected, f"docs/results.md is stale: {fix}"
