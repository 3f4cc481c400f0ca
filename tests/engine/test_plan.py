"""``varsmooth run ID --preset P --plan``: the run list and lengths of the real sweep, timings, nothing written."""

import math
import os

import pytest

from varsmooth import cli
from varsmooth import experiments as ex
from varsmooth.commands.plan import plan_configs
from varsmooth.engine import TrainConfig, prepare, resolve_config, train


def _cli(argv, capsys):
    try:
        rc = cli.main(["run", *argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_prints_the_sweep_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _cli(["noisy-accuracy", "--preset", "smoke", "--plan", "--cluster-gpus", "4", "--no-progress"],
                        capsys)  # fmt: skip
    assert rc == 0, err
    assert os.listdir(tmp_path) == []  # no runs/ folder, nothing
    cfg = ex.resolve_preset("noisy-accuracy", "smoke")
    configs = plan_configs("noisy-accuracy", cfg)
    assert f"runs: {len(configs)};" in out and len(configs) == 14  # 2 corruptions x (erm, 2 ls, 2 sam, 2 ivon)
    for kind in ("sgd", "sam", "ivon"):
        assert f"mlp       {kind:<4} batch 64   fp32:" in out and "ms/step" in out
    assert "device-hours on cpu:" in out and "on a cluster of 4 GPUs at 1 per run (4 runs at once)" in out

    # steps per run from the run's own data split, and for ess auto the search's recorded cost
    fixed = next(c for c in configs if c["tags"]["method"] == "erm")
    run = prepare(resolve_config(TrainConfig.from_dict(fixed["train"])))
    steps = cfg["epochs"] * math.ceil(len(run.train_pos) / cfg["batch_size"])
    auto = next(c for c in configs if c["tags"]["ess_factor"] == "auto")
    res = train(TrainConfig.from_dict({**auto["train"], "progress": False, "save_train_predictions": False}))
    auto_steps = round(res.metrics["ess_search_cost_runs"] * steps)
    assert f"steps per run: {steps:,} to {auto_steps:,};" in out and auto_steps > steps
    assert f"steps in all: {12 * steps + 2 * auto_steps:,}" in out  # 2 ivon-auto runs


@pytest.mark.parametrize(("argv", "message"), [
    (["--plan", "--cluster-gpus", "0"], "--cluster-gpus 0 is not allowed"),
    (["--cluster-gpus", "2"], "--cluster-gpus 2 is not allowed; give N >= 1, with --plan"),
    (["--plan", "--set", "train={precision: fp8}"], "precision='fp8' is not allowed"),
])  # fmt: skip
def test_plan_bad_input_one_line_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _cli(["noisy-accuracy", "--preset", "smoke", *argv], capsys)
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert os.listdir(tmp_path) == []
