"""The package's import graph, read with ``ast`` (benchmarks/import_graph.py): no import cycle (module level or
inside functions), no private name imported across modules, no experiment importing another, and the top level of
``varsmooth`` holding only the CLI, errors, io, lock, losses, metrics and models besides its subpackages."""

import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "varsmooth"
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
G = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("import_graph", G)
_spec.loader.exec_module(G)


@pytest.fixture(scope="module")
def graph():
    return G.build(SRC)


def test_no_import_cycle(graph):
    assert G.cycles(graph) == []


def test_no_private_import_across_modules(graph):
    assert graph.private == []


def test_no_experiment_imports_another(graph):
    assert len(G.experiment_modules(graph)) >= 10  # the rule below is about something
    assert G.experiment_imports(graph) == []


# docs/design.md's layers, bottom first: a module imports only modules of its own layer or below
LAYERS = [
    ("varsmooth", "errors", "io", "lock"),
    ("optim", "noise", "data", "models", "losses", "metrics", "plots", "loggers"),
    ("engine", "integrations"),
    ("detect",),
    ("report",),
    ("experiments",),
    ("commands", "cli"),
]


def _layer(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else parts[0]
    return next(i for i, names in enumerate(LAYERS) if name in names)


def test_imports_only_point_down_the_layers(graph):
    up = sorted((a, b) for a, b in graph.edges | graph.function_edges if _layer(b) > _layer(a))
    assert up == []


def test_top_level_holds_only_the_base_modules():
    top = sorted(p.stem for p in SRC.glob("*.py") if p.stem != "__init__")
    assert top == ["cli", "errors", "io", "lock", "losses", "metrics", "models"]


def _toy(tmp_path, files):
    pkg = tmp_path / "varsmooth"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return G.build(pkg)


def test_the_checks_find_what_they_forbid(tmp_path):
    """The rules fail on a cycle through a function-level import, on ``from x import _y``, on ``x._y`` and on an
    experiment importing another, and ignore imports under ``if TYPE_CHECKING:``."""
    g = _toy(tmp_path, {
        "a.py": "from .b import f\n",
        "b.py": "def f():\n    from . import a\n    return a._hidden\n",
        "c.py": "from .a import _private\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n",
        "d.py": "from . import c\n",
        "experiments/__init__.py": "",
        "experiments/one.py": "ID = 'one'\nfrom .two import x\n",
        "experiments/two.py": "ID = 'two'\nx = 1\n",
    })  # fmt: skip
    assert G.cycles(g) == [["varsmooth.a", "varsmooth.b"]]
    assert G.cycles(g, function_level=False) == []
    assert [p.split(": ", 1)[1] for p in g.private] == ["a._hidden (varsmooth.a)", "from varsmooth.a import _private"]
    assert G.experiment_imports(g) == [("varsmooth.experiments.one", "varsmooth.experiments.two")]
    levels = G.levels(g)
    assert levels["varsmooth.d"] == levels["varsmooth.c"] + 1


def test_design_doc_lists_every_module():
    """docs/design.md's modules table names every module of the package, and no module that is gone."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", design, flags=re.M))
    assert listed == {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")}
