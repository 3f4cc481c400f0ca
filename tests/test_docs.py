"""The documentation site builds with `mkdocs build --strict` (as CI requires): every page in the nav, every link and
anchor inside docs/ resolves, the changelog is included, and the API reference is generated from the docstrings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if _missing():
        pytest.skip(f"mkdocs is not installed ({', '.join(_missing())} missing): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    config = str(ROOT / "mkdocs.yml")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", config, "--site-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def test_strict_build_writes_every_page(site):
    pages = ["index", "results", "contract", "design", "guide/python", "experiments/noisy-accuracy", "changelog"]
    for page in pages:
        assert (site / page / "index.html").is_file() if page != "index" else (site / "index.html").is_file(), page


def test_api_reference_is_generated_from_docstrings(site):
    expected = {
        "optim": ["varsmooth.optim.IVON", "varsmooth.optim.IVON.sampled_params", "varsmooth.optim.predictive_probs"],
        "noise": ["varsmooth.noise.label_noise", "varsmooth.noise.glm_label_noise"],
        "detect": ["varsmooth.detect.find_label_issues", "varsmooth.detect.rank_suspects"],
        "engine": ["varsmooth.engine.TrainConfig", "varsmooth.engine.train.train"],
        "data": ["varsmooth.data.load_dataset", "varsmooth.data.parse_corruption"],
    }
    for package, ids in expected.items():
        html = (site / "api" / package / "index.html").read_text(encoding="utf-8")
        for anchor in ids:
            assert f'id="{anchor}"' in html, f"{anchor} missing from the API reference"
    ivon = (site / "api" / "optim" / "index.html").read_text(encoding="utf-8")
    assert "effective sample size" in ivon  # the docstring text, not only the names


def test_changelog_and_results_are_included(site):
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Renames" in changelog and "--8&lt;--" not in changelog and "--8<--" not in changelog
    results = (site / "results" / "index.html").read_text(encoding="utf-8")
    assert "Paper claims: verdicts" in results and "<table>" in results
