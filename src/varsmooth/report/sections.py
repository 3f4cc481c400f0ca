"""The experiment folders under a results folder, each loaded: what the report and the digest read.

An experiment folder is the results folder itself or any sub-folder holding ``config.json``, ``summary.json`` or
``results.csv`` (sweep folders named ``runs`` are skipped); a PNG belongs to the nearest experiment folder above it,
else to a section of its own folder. Reads files only: no experiment is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import read_csv, read_json

MARKERS = ("config.json", "summary.json", "results.csv")
SKIP_DIRS = {"runs"}


@dataclass
class Section:
    """One experiment folder (or the loose figures of the output folder)."""

    path: Path
    rel: str
    title: str = ""
    description: str = ""
    preset: str = ""
    order: int | None = None  # the experiment's place in the paper's order (config.json), for sorting
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    results: list[dict] | None = None
    figures: list[Path] = field(default_factory=list)
    runs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "sec-" + "".join(c if c.isalnum() else "-" for c in (self.rel or "root"))


def scan(out_dir: Path) -> list[Section]:
    """Experiment folders (with a marker file) and figure-only folders, each with the PNGs it owns."""
    experiments: dict[Path, Section] = {}
    figure_only: dict[Path, Section] = {}
    for dirpath, dirnames, filenames in os.walk(out_dir):  # top-down, so parents are seen first
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        here = Path(dirpath)
        rel = here.relative_to(out_dir).as_posix()
        rel = "" if rel == "." else rel
        if any(m in filenames for m in MARKERS):
            experiments[here] = Section(path=here, rel=rel)
            runs = here / "runs"
            experiments[here].runs = sum(1 for _ in runs.glob("*/result.json")) if runs.is_dir() else 0
        for name in sorted(f for f in filenames if f.lower().endswith(".png") and not f.startswith(".")):
            # a PNG belongs to the nearest experiment folder above it, else to a section for its own folder
            owner = next((experiments[p] for p in [here, *here.parents] if p in experiments), None)
            if owner is None:
                owner = figure_only.setdefault(here, Section(path=here, rel=rel, title=rel or "Figures"))
            owner.figures.append(here / name)
    for s in experiments.values():
        _load(s)
    return [*experiments.values(), *figure_only.values()]


def _load(s: Section) -> None:
    for name in ("config.json", "summary.json"):
        path = s.path / name
        if not path.exists():
            continue
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            s.problems.append(f"could not read {name}: {err}")
            continue
        if name == "config.json":
            s.config = data.get("config", {}) if isinstance(data.get("config"), dict) else {}
            s.versions = data.get("versions", {}) if isinstance(data.get("versions"), dict) else {}
            s.title = s.title or str(data.get("experiment", ""))
            s.preset = str(data.get("preset", ""))
            s.description = str(data.get("description", ""))
            s.order = data.get("order") if isinstance(data.get("order"), int) else None
        else:
            s.summary = {k: v for k, v in data.items() if k not in ("experiment", "preset", "description")}
            s.title = s.title or str(data.get("experiment", ""))
            s.preset = s.preset or str(data.get("preset", ""))
            s.description = str(data.get("description", "")) or s.description
    if (s.path / "results.csv").exists():
        try:
            s.results = read_csv(s.path / "results.csv")
        except (OSError, ValueError) as err:
            s.problems.append(f"could not read results.csv: {err}")
    s.title = s.title or s.rel or s.path.name


def experiment_sections(out_dir: str | os.PathLike) -> list[Section]:
    """The experiment folders under ``out_dir`` (``out_dir`` included), each loaded, in the paper's order."""
    return paper_order(scan(Path(out_dir).expanduser()))


def paper_order(sections: list[Section]) -> list[Section]:
    """The output folder first, then experiments in the paper's order (recorded in their config.json), then the
    rest by path."""
    last = 1 + max((s.order for s in sections if s.order is not None), default=0)
    return sorted(sections, key=lambda s: (s.rel != "", last if s.order is None else s.order, s.rel))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
