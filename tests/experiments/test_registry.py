"""The experiment registry is read from the source (``ast``), so ``varsmooth list`` imports no experiment and no
torch; it must still equal what importing every module gives."""

import importlib
import pkgutil
import subprocess
import sys

from varsmooth import experiments as ex


def test_registry_matches_the_modules():
    imported = {}
    for info in pkgutil.iter_modules(ex.__path__):
        module = importlib.import_module(f"varsmooth.experiments.{info.name}")
        if hasattr(module, "ID") and callable(getattr(module, "run", None)):
            imported[module.ID] = (info.name, module.DESCRIPTION)
    assert {k: (m, ex.describe(k)) for k, m in ex.experiments().items()} == imported
    assert len(imported) >= 11 and ex.DEFAULT_EXPERIMENT in imported


def test_list_shows_the_demo_first_and_imports_no_experiment_nor_torch():
    code = ("import sys; from varsmooth import cli; cli.main(['list']); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('varsmooth.experiments.')))")
    framework = "['varsmooth.experiments.sweep']"  # the package's own import (lock names); no experiment
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("demo ") and "(the default: `varsmooth run`)" in out[0]
    others = [i for i in ex.experiments() if i != "demo"]
    assert [line.split()[0] for line in out[1:-1]] == others
    assert out[-1] == framework
