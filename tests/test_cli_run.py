"""The `varsmooth run` / `list` framework: presets, overrides, and bad input (one line, exit 2, nothing written)."""

import pytest

from varsmooth import experiments as ex
from varsmooth.cli import main

PAPER_EXPERIMENTS = [
    "noise-curve", "moons", "theorems", "noise-gallery", "smoothed-labels", "noisy-accuracy",
    "fixed-hessian", "class-dependent", "hessian-init", "natural-noise",
]


def test_every_paper_experiment_is_registered_with_three_presets():
    table = ex.experiments()
    assert list(table)[: len(PAPER_EXPERIMENTS)] == PAPER_EXPERIMENTS
    assert "demo" in table
    for exp_id in table:
        assert {"smoke", "cpu", "paper"} <= set(ex.presets(exp_id)), exp_id
        assert ex.describe(exp_id).strip()


def test_list_names_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for exp_id in PAPER_EXPERIMENTS + ["demo"]:
        assert exp_id in out


def test_overrides_are_parsed_as_yaml():
    cfg = ex.resolve_preset("noise-curve", "smoke", dict([ex.parse_override("variances=[0.5, 2]")]))
    assert cfg["variances"] == [0.5, 2]


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        return exc.code


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["run", "noise-curve", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "noise-curve", "--preset", "smoke", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["run", "noise-curve", "--preset", "smoke", "--set", "novalue"], "--set expects key=value"),
        (["run", "noise-curve", "--preset", "smoke", "--jobs", "0"], "--jobs must be >= 1"),
        (["run", "noise-curve", "--preset", "smoke", "--shard", "2/2"], "--shard"),
        (["run", "noise-gallery", "--preset", "cpu"], "pass --data-dir"),
        (["run", "--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, fragment):
    out = tmp_path / "out"
    assert _exit_code([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("varsmooth: error:") and fragment in err[0], err
    assert not out.exists()
