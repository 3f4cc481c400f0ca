"""``varsmooth train``: a good run, and bad input -> one line on stderr, exit 2, no traceback, nothing written."""

import argparse
import re

import numpy as np
import pytest

from varsmooth import cli
from varsmooth.commands import train as train_cmd
from varsmooth.engine import TrainConfig, train
from varsmooth.errors import InputError
from varsmooth.io import read_json


@pytest.fixture(autouse=True)
def _cached_mnist_subset(monkeypatch):
    """Load the bundled MNIST subset once for the whole file (the loader itself is tested with the data module)."""
    import varsmooth.data as vd

    real = vd.load_dataset

    def load(name, data_dir=None, **opts):
        if name == "mnist-subset" and not opts:
            if "mnist-subset" not in _CACHE:
                _CACHE["mnist-subset"] = real(name)
            return _CACHE["mnist-subset"]
        return real(name, data_dir, **opts)

    monkeypatch.setattr(vd, "load_dataset", load)


_CACHE = {}

FAST = ["--epochs", "1", "--train-subset", "200", "--no-progress", "--device", "cpu", "--test-samples", "2"]


def _run(argv, capsys):
    try:
        rc = cli.main(["train", *argv])
    except SystemExit as exc:  # argparse errors (bad option values) exit while parsing
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_train_command_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = _run(["--method", "ivon", "--corruption", "pairflip:0.2", "--seed", "1", "--out", str(out),
                            *FAST],
                           capsys)  # fmt: skip
    assert rc == 0, err
    assert "ivon: test acc" in stdout and "predictive" in stdout and "flip rate" in stdout
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "final.json", "checkpoint.pt",
                                               "arrays.npz", ".lock"}  # fmt: skip
    cfg = read_json(out / "config.json")
    assert cfg["config"]["corruption"] == "pairflip:0.2" and cfg["seed"] == 1 and cfg["versions"]["torch"]
    final = read_json(out / "final.json")
    assert final["corruption_realised_rate"] == pytest.approx(np.load(out / "arrays.npz")["flip_mask"].mean())


def test_main_through_its_own_parser(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--method", "ls", "--alpha", "0.3", "--out", str(tmp_path / "r"), *FAST])
    assert train_cmd.main(args) == 0
    assert read_json(tmp_path / "r" / "config.json")["config"]["alpha"] == 0.3
    # every option reaches the config (none is silently ignored)
    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(vars(args)) - {"out", "no_progress"} <= fields
    cfg = train_cmd.config_from_args(parser.parse_args(["--lr-decay", "0.5", "--schedule-epochs", "7", "--out", "x"]))
    assert cfg.lr_decay == 0.5 and cfg.schedule_epochs == 7 and cfg.progress
    with pytest.raises(InputError, match="unknown method"):
        train_cmd.main(parser.parse_args(["--method", "x", "--out", str(tmp_path / "s"), *FAST]))
    assert not (tmp_path / "s").exists()


def _labels_file(tmp_path, name, values):
    path = tmp_path / name
    np.save(path, np.asarray(values, dtype=np.int64))
    return str(path)


BAD = {
    "unknown method": (["--method", "adamw"], "unknown method 'adamw'"),
    "unknown model": (["--model", "vgg"], "unknown model 'vgg'"),
    "unknown dataset": (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "rate 1": (["--corruption", "symmetric:1.0"], "outside \\[0, 1\\)"),
    "negative rate": (["--corruption", "pairflip:-0.1"], "outside \\[0, 1\\)"),
    "corruption kind": (["--corruption", "gaussian:0.1"], "gaussian"),
    "class-dependent row": (["--corruption", "class-dependent:0.6:0.1"], "class-dependent"),
    "missing data dir": (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "nowhere"),
    "no data dir": (["--dataset", "mnist"], "data"),
    "zero epochs": (["--epochs", "0"], "epochs=0"),
    "val fraction": (["--val-fraction", "1.5"], "val_fraction=1.5"),
    "negative lr": (["--lr", "-0.1"], "lr=-0.1"),
    "rho": (["--method", "sam", "--rho", "-1"], "rho=-1"),
    "fixed-h beta2": (["--method", "ivon-fixed-h", "--beta2", "0.9"], "beta2"),
    "label out of range": (["--noisy-labels", "{labels_range}"], "10"),
    "label file length": (["--noisy-labels", "{labels_short}"], "3999"),
    "label file missing": (["--noisy-labels", "{tmp}/none.npy"], "does not exist"),
    "corruption and label file": (["--corruption", "symmetric:0.2", "--noisy-labels", "{labels_ok}"], "one source"),
    "subset too big": (["--train-subset", "99999"], "train_subset=99999"),
    "model options json": (["--model-options", "[1"], "JSON object"),
    "model option": (["--model-options", '{"depth": 3}'], "depth"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    argv, match = BAD[case]
    labels = np.arange(4000) % 10
    files = {"tmp": str(tmp_path),
             "labels_range": _labels_file(tmp_path, "range.npy", np.where(np.arange(4000) == 7, 10, labels)),
             "labels_short": _labels_file(tmp_path, "short.npy", labels[:3999]),
             "labels_ok": _labels_file(tmp_path, "ok.npy", labels)}  # fmt: skip
    out = tmp_path / "out"
    for key, value in files.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    fast = [a for a in FAST if a not in ("--train-subset", "200")] if "--train-subset" in argv else FAST
    rc, _, err = _run([*fast, *argv, "--out", str(out)], capsys)  # the case's options override FAST
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varsmooth: error:"), err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists()


def test_nan_features_are_refused_before_anything_is_written(tmp_path):
    from varsmooth.data.bundled import load_mnist_subset

    data = load_mnist_subset()  # a private copy: this test corrupts it
    data.train.features[5, 0, 3, 3] = float("nan")  # e.g. a corrupt preprocessing step upstream
    with pytest.raises(InputError, match="NaN|nan|finite"):
        train(TrainConfig(epochs=1, progress=False, device="cpu"), tmp_path / "out", data=data)
    assert not (tmp_path / "out").exists()


def test_mismatched_config_in_out_folder_exit_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _run(["--method", "erm", "--out", out, *FAST], capsys)[0] == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    rc, _, err = _run(["--method", "erm", "--lr", "0.2", "--out", out, *FAST], capsys)
    assert rc == 2 and "different config (lr differ)" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_diverging_run_exits_nonzero_with_one_line_and_keeps_checkpoint(tmp_path, capsys):
    # epoch 1 trains at lr 0.05; the step schedule multiplies it by 1e30 from epoch 2 on
    out = tmp_path / "run"
    argv = ["--method", "erm", "--epochs", "3", "--train-subset", "200", "--no-progress", "--device", "cpu",
            "--schedule", "step", "--milestones", "1", "--out", str(out)]  # fmt: skip
    rc, _, err = _run([*argv, "--lr-decay", "1e30", "--batch-size", "20"], capsys)
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("varsmooth: error: training diverged at epoch 2")
    assert "last good checkpoint (epoch 1)" in err and "Traceback" not in err
    assert not (out / "final.json").exists()
    from varsmooth.engine.checkpoint import load

    assert load(out / "checkpoint.pt").epoch == 1
