"""Bad inputs, generated: every subcommand (train, run, suspects, report) and the Python API answer one line
``varsmooth: error: ...`` with exit code 2 (the API: one :class:`InputError`), print no traceback, and leave the
output folder byte for byte as it was. The cases are generated below: bad values for every option, bad files of
every format the library reads (empty, truncated, binary garbage, a foreign JSON or pickle type), corrupt run state
(checkpoint fields, config.json). Every case fails in validation, before any training.

Operating-system errors: a full disk (a tiny tmpfs, or a simulated ENOSPC where mounting is not allowed) and a
read-only folder (chmod for a normal user; a read-only bind mount for root, who ignores permissions, or a simulated
EROFS) give one line each, and the folder still loads and resumes afterwards.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import varsmooth.io as vio
from varsmooth import cli
from varsmooth import experiments as ex
from varsmooth.engine import TrainConfig, train
from varsmooth.engine import checkpoint as ckpt
from varsmooth.engine.ess_search import SEARCH_DIR
from varsmooth.errors import InputError, os_error_message
from varsmooth.experiments.sweep import load_result
from varsmooth.models import build_model
from varsmooth.noise.network import label_noise

# The run every train case starts from: a finished 1-epoch run of this command (cases change one option).
TRAIN = ["train", "--dataset", "moons", "--model", "logreg", "--epochs", "1", "--batch-size", "200", "--device",
         "cpu", "--no-progress", "--no-save-train-predictions", "--test-samples", "2"]  # fmt: skip
IVON = ["--method", "ivon", "--ess-factor", "1"]
N_TRAIN_MOONS = 800  # the bundled moons training split


# ---------------------------------------------------------------------------------------------------------------
# helpers


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, by relative path; {} when it does not exist."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": folder.read_bytes()}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def run_cli(argv: list, capsys) -> tuple[int, str]:
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse
        rc = stop.code
    return rc, capsys.readouterr().err


def assert_one_line(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.startswith("varsmooth: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "weights_only" not in err, err


def assert_rejected(argv: list, folder: Path, capsys) -> str:
    """Run the CLI; one line, exit 2, ``folder`` unchanged byte for byte."""
    before = snapshot(folder)
    rc, err = run_cli(argv, capsys)
    assert_one_line(rc, err)
    assert snapshot(folder) == before
    return err


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def erm_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("erm") / "run"
    assert cli.main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def ivon_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ivon") / "run"
    assert cli.main([*TRAIN, *IVON, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def curve_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curve") / "results"
    ex.run_experiment("noise-curve", ex.resolve_preset("noise-curve", "smoke"), out, preset="smoke",
                      runtime=ex.Runtime(progress=False))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------------------
# train: a bad value for every option (on an existing run folder, which must not change)

POSITIVE_INT = ["0", "-1", "2147483648", "99999999999999999999", "1.5", "x"]
SEED = ["-1", "-2147483648", "2147483648", "99999999999999999999", "x"]
UNIT = ["-0.1", "1", "nan", "inf", "-inf"]  # for options in [0, 1)
POSITIVE = ["0", "-1", "nan", "inf", "-inf", "x"]
NON_NEGATIVE = ["-1", "nan", "inf", "-inf"]

TRAIN_BAD: dict[str, tuple[list[str], list[str]]] = {  # option: (bad values, extra flags to reach its check)
    "--dataset": (["nope", "", "MNIST-subset "], []),
    "--model": (["nope", "resnet", ""], []),
    "--method": (["nope", "IVON", ""], []),
    "--corruption": (["bogus:0.1", "symmetric:2", "symmetric:-0.1", "symmetric:nan", "pairflip", "symmetric:x"], []),
    "--seed": (SEED, []),
    "--corruption-seed": (SEED, []),
    "--epochs": (POSITIVE_INT, []),
    "--batch-size": (POSITIVE_INT, []),
    "--lr": (POSITIVE, []),
    "--weight-decay": (NON_NEGATIVE, []),
    "--momentum": (UNIT, []),
    "--schedule": (["nope", "Cosine"], []),
    "--schedule-epochs": (["0", "-1", "2147483648"], []),
    "--schedule-unit": (["nope", "batch"], []),
    "--milestones": (["-3", "x", "1.5"], []),
    "--lr-decay": (NON_NEGATIVE, []),
    "--warmup-epochs": (["-1", "nan", "inf", "1"], []),
    "--alpha": (["-0.1", "1.5", "nan", "inf"], ["--method", "ls"]),
    "--ols-init-smoothing": (["-0.1", "2", "nan", "inf"], ["--method", "ols"]),
    "--rho": (NON_NEGATIVE, ["--method", "sam"]),
    "--ess": (["0", "-1", "nan", "inf", "-inf", "x", "auto"], IVON),
    "--ess-factor": (["0", "-1", "nan", "inf"], ["--method", "ivon"]),
    "--ess-grid": (["0", "-1", "nan", "inf", "x"], [*IVON, "--ess", "auto", "--val-fraction", "0.2"]),
    "--ess-score": (["nope", "val_acc"], IVON),
    "--hess-init": (["0", "-1", "nan", "inf"], IVON),
    "--beta1": (UNIT, IVON),
    "--beta2": (["1.5", "-0.1", "nan", "inf"], IVON),
    "--mc-samples": (["0", "-1", "2147483648"], IVON),
    "--test-samples": (["0", "-1", "2147483648"], IVON),
    "--clip-radius": (["0", "-1", "nan", "inf"], IVON),
    "--train-subset": (["0", "-5", str(N_TRAIN_MOONS + 1), "2147483648"], []),
    "--val-fraction": (["1", "-0.1", "nan", "inf"], []),
    "--model-options": (["notjson", "[1]", '{"nope": 1}', '{"hidden": "x"}'], ["--model", "mlp"]),
    "--data-options": (['{"nope": 1}', "[]", "3", '{"test_fraction": 0.999}', '{"noise": NaN}', '{"n": 1.5}',
                        '{"seed": -1}', '{"n": "x"}', '{"test_fraction": Infinity}'], []),
    "--device": (["foo", "cuda:x", "tpu", "cuda:99999", "CPU", ""], []),
    "--eval-batch-size": (["0", "-1", "2147483648"], []),
    "--eval-every": (["0", "-1", "2147483648"], []),
    "--num-workers": (["-1", "99999"], []),
    "--noisy-labels": (["/nonexistent/labels.npy"], []),
    "--data-dir": (["/nonexistent/folder"], []),
}
TRAIN_CASES = [(flag, value, extra) for flag, (values, extra) in TRAIN_BAD.items() for value in values]


@pytest.mark.parametrize(("flag", "value", "extra"), TRAIN_CASES, ids=[f"{f}={v}" for f, v, _ in TRAIN_CASES])
def test_train_bad_value(flag, value, extra, erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    assert_rejected([*TRAIN, *extra, flag, value, "--out", out], out, capsys)


TRAIN_FRESH = [["--epochs", "0"], ["--lr", "inf"], ["--seed", "-1"], ["--device", "gpu"], ["--milestones", "-1"],
               ["--batch-size", "99999999999999999999"], ["--dataset", "nope"], ["--train-subset", "100000"],
               ["--corruption", "symmetric:1.5"], ["--nope", "1"], ["--method", "ivon", "--ess", "inf"],
               ["--method", "ivon", "--weight-decay", "inf"], ["--model", "mlp", "--model-options", '{"hidden": [-1]}'],
               ["--noisy-labels", "/nonexistent.npy"], ["--data-options", '{"n": -5}']]  # fmt: skip


@pytest.mark.parametrize("extra", TRAIN_FRESH, ids=[" ".join(e) for e in TRAIN_FRESH])
def test_train_bad_value_creates_nothing(extra, tmp_path, capsys):
    assert_rejected([*TRAIN, *extra, "--out", tmp_path / "a" / "new"], tmp_path, capsys)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_train_out_is_a_file(where, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    err = assert_rejected([*TRAIN, "--out", out], tmp_path, capsys)
    assert "not a folder" in err


# ---------------------------------------------------------------------------------------------------------------
# bad files: natural noisy labels (.npy, .csv, .txt, .pt) for train


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _pt(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


GOOD_LABELS = np.zeros(N_TRAIN_MOONS, dtype=np.int64)
LABEL_FILES = {
    "empty.npy": b"",
    "empty.csv": b"",
    "empty.pt": b"",
    "garbage.npy": bytes(range(256)) * 4,
    "garbage.pt": bytes(range(256)) * 4,
    "truncated.npy": _npy(GOOD_LABELS)[:100],
    "truncated.pt": _pt({"worse_label": GOOD_LABELS})[:200],
    "object.npy": _npy(np.array([{"a": 1}] * N_TRAIN_MOONS, dtype=object)),
    "floats-nan.npy": _npy(np.full(N_TRAIN_MOONS, np.nan)),
    "matrix.npy": _npy(np.zeros((N_TRAIN_MOONS, 2), dtype=np.int64)),
    "too-few.npy": _npy(np.zeros(3, dtype=np.int64)),
    "out-of-range.npy": _npy(np.full(N_TRAIN_MOONS, 7, dtype=np.int64)),
    "negative.npy": _npy(np.full(N_TRAIN_MOONS, -1, dtype=np.int64)),
    "words.csv": b"label\n" + b"cat\n" * N_TRAIN_MOONS,
    "binary.csv": b"\xff\xfe\x00\x01" * 100,
    "too-few.txt": b"0\n1\n",
    "out-of-range.txt": b"5\n" * N_TRAIN_MOONS,
    "list.pt": _pt(["a", "b"]),
    "no-key.pt": _pt({"other": GOOD_LABELS}),
    "labels.json": b"[0, 1]",
}


@pytest.mark.parametrize("name", list(LABEL_FILES))
def test_train_bad_noisy_label_file(name, erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    path = tmp_path / name
    path.write_bytes(LABEL_FILES[name])
    err = assert_rejected([*TRAIN, "--noisy-labels", path, "--out", out], out, capsys)
    assert name in err  # names the file


def test_train_noisy_labels_a_folder(erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    assert_rejected([*TRAIN, "--noisy-labels", tmp_path, "--out", out], out, capsys)


# ---------------------------------------------------------------------------------------------------------------
# corrupt run state: checkpoint.pt and config.json, for resuming (train) and for scoring (suspects)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _edit(**fields):
    def corrupt(saved: dict) -> dict:
        return {**saved, **fields}

    return corrupt


def _model_edit(how):
    def corrupt(saved: dict) -> dict:
        model = dict(saved["model"])
        key = next(iter(model))
        if how == "missing":
            del model[key]
        elif how == "shape":
            model[key] = torch.zeros(7, 7)
        elif how == "extra":
            model["nope.weight"] = torch.zeros(1)
        else:
            model[key] = "x"
        return {**saved, "model": model}

    return corrupt


def _drop(*keys):
    return lambda saved: {k: v for k, v in saved.items() if k not in keys}


CHECKPOINT_BYTES = {  # whole-file corruptions
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "tail-cut": lambda raw: raw[:-10],
    "garbage": lambda raw: bytes(range(256)) * 8,
    "zeroed-head": lambda raw: bytes(64) + raw[64:],
    "json-text": lambda raw: b'{"epoch": 1, "config": {}}',
    "pickle-global": lambda raw: pickle.dumps(_Evil(), protocol=2),
    "torch-list": lambda raw: _pt([1, 2, 3]),
    "torch-tensor": lambda raw: _pt(torch.zeros(3)),
    "torch-string": lambda raw: _pt("checkpoint"),
}
CHECKPOINT_FIELDS = {  # a valid torch file whose fields are wrong
    "missing-keys": _drop("model", "method"),
    "epoch-negative": _edit(epoch=-1),
    "epoch-string": _edit(epoch="1"),
    "epoch-bool": _edit(epoch=True),
    "epoch-float": _edit(epoch=1.0),
    "epoch-huge": _edit(epoch=10**9),
    "format": _edit(format=99),
    "config-list": _edit(config=[1]),
    "model-empty": _edit(model={}),
    "model-missing-key": _model_edit("missing"),
    "model-wrong-shape": _model_edit("shape"),
    "model-extra-key": _model_edit("extra"),
    "model-not-tensor": _model_edit("string"),
    "method-empty": _edit(method={}),
    "method-lrs-string": _edit(method={"base_lrs": "x"}),
    "method-lrs-nan": _edit(method={"base_lrs": [math.nan]}),
    "method-optimizer-garbage": _edit(method={"base_lrs": [0.1], "optimizer": "x"}),
    "rng-string": _edit(rng="x"),
    "rng-empty-state": _edit(rng=[{}]),
    "rng-two-ranks": _edit(rng=[{}, {}]),
    "history-empty": _edit(history=[]),
    "history-wrong-epoch": _edit(history=[{"epoch": 5}]),
    "history-string": _edit(history="x"),
    "data-order-string": _edit(data_order="x"),
    "schedule-list": _edit(schedule=[1]),
    "callbacks-string": _edit(callbacks="x"),
    "labels-int": _edit(labels=5),
    "labels-other": _edit(labels="0" * 64),
}
CHECKPOINT_CASES = [*CHECKPOINT_BYTES, *CHECKPOINT_FIELDS]


def corrupt_checkpoint(folder: Path, case: str) -> None:
    file = folder / "checkpoint.pt"
    if case in CHECKPOINT_BYTES:
        file.write_bytes(CHECKPOINT_BYTES[case](file.read_bytes()))
    else:
        saved = torch.load(file, map_location="cpu", weights_only=True)
        file.write_bytes(_pt(CHECKPOINT_FIELDS[case](saved)))


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_train_resume_corrupt_checkpoint(case, erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    corrupt_checkpoint(out, case)
    assert_rejected([*TRAIN, "--epochs", "2", "--out", out], out, capsys)
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_suspects_corrupt_checkpoint(case, ivon_run, tmp_path, capsys):
    out = copy_of(ivon_run, tmp_path)
    corrupt_checkpoint(out, case)
    assert_rejected(["suspects", out, "--out", out / "suspects", "--device", "cpu", "--samples", "2"], out, capsys)


CONFIG_JSON = {
    "empty": b"",
    "truncated": b'{"config": {"dataset": "mo',
    "garbage": bytes(range(256)),
    "not-utf8": b'{"config": "\xff\xfe"}',
    "list": b"[1, 2]",
    "no-config": b'{"seed": 0}',
    "config-number": b'{"config": 5}',
    "deep": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("case", list(CONFIG_JSON))
def test_train_resume_corrupt_config_json(case, erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    (out / "config.json").write_bytes(CONFIG_JSON[case])
    err = assert_rejected([*TRAIN, "--epochs", "2", "--out", out], out, capsys)
    assert "config.json" in err


SEARCH_JSON = {
    "empty": b"",
    "truncated": b'{"config": {',
    "list": b"[]",
    "rungs-string": b'{"config": {}, "grid": [], "rungs": "x"}',
    "rung-missing-keys": b'{"config": {}, "grid": [], "rungs": [{"epochs": 1}]}',
}


@pytest.mark.parametrize("case", list(SEARCH_JSON))
def test_train_ess_auto_corrupt_search_json(case, tmp_path, capsys):
    out = tmp_path / "out"
    (out / SEARCH_DIR).mkdir(parents=True)
    (out / SEARCH_DIR / "search.json").write_bytes(SEARCH_JSON[case])
    argv = [*TRAIN, "--method", "ivon", "--ess", "auto", "--val-fraction", "0.2", "--out", out]
    assert "search.json" in assert_rejected(argv, out, capsys)


def test_train_checkpoint_is_a_folder(erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").mkdir()
    assert_rejected([*TRAIN, "--out", out], out, capsys)


def test_train_resume_other_config_is_refused(erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    err = assert_rejected([*TRAIN, "--lr", "0.01", "--out", out], out, capsys)
    assert "different config" in err


# ---------------------------------------------------------------------------------------------------------------
# suspects: every option

SUSPECTS_BAD = [["--samples", "0"], ["--samples", "-1"], ["--samples", "x"], ["--batch-size", "0"],
                ["--top", "-1"], ["--score", "nope"], ["--method", "nope"], ["--seed", "-1"], ["--seed", "2147483648"],
                ["--device", "foo"], ["--device", "cuda:x"], ["--dataset", "nope"], ["--nope"]]  # fmt: skip


@pytest.mark.parametrize("extra", SUSPECTS_BAD, ids=[" ".join(e) for e in SUSPECTS_BAD])
def test_suspects_bad_option(extra, ivon_run, tmp_path, capsys):
    out = copy_of(ivon_run, tmp_path)
    assert_rejected(["suspects", out, "--out", out / "s", "--device", "cpu", *extra], out, capsys)


def test_suspects_bad_checkpoint_paths(erm_run, ivon_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for target, out in [
        (tmp_path / "missing", tmp_path / "s"),  # no such run
        (erm_run, tmp_path / "s"),  # not an IVON run
        (tmp_path / "file", tmp_path / "s"),  # not a checkpoint
        (ivon_run, tmp_path / "file"),  # --out is a file
        (ivon_run, tmp_path / "file" / "sub"),
    ]:
        before = snapshot(tmp_path), snapshot(ivon_run)
        rc, err = run_cli(["suspects", target, "--out", out, "--device", "cpu"], capsys)
        assert_one_line(rc, err)
        assert (snapshot(tmp_path), snapshot(ivon_run)) == before


# ---------------------------------------------------------------------------------------------------------------
# run: every option, on an existing results folder whose config.json must not be overwritten

RUN_BAD = [
    ["nope"], ["noise-curve", "--preset", "nope"], ["noise-curve", "--set", "noequals"],
    ["noise-curve", "--set", "=1"], ["noise-curve", "--set", "nope=1"], ["noise-curve", "--set", "points=.nan"],
    ["noise-curve", "--set", "f_min=-.inf"],
    ["noise-curve", "--set", "f_max=.inf"], ["noise-curve", "--set", "variances=[.nan]"],
    ["noise-curve", "--set", "variances=[1, .inf]"], ["noise-curve", "--set", "points=abc"],
    ["noise-curve", "--set", "points=2"], ["noise-curve", "--set", "points=-1"],
    ["noise-curve", "--set", "points=99999999999"], ["noise-curve", "--set", "points=1.5"],
    ["noise-curve", "--set", "f_min=1"], ["noise-curve", "--set", "f_max=-1"], ["noise-curve", "--set", "f_min=x"],
    ["noise-curve", "--set", "variances=[]"], ["noise-curve", "--set", "variances=x"],
    ["noise-curve", "--set", "variances=[-1]"], ["noise-curve", "--set", "variances=[true]"],
    ["noise-curve", "--set", "points=[1"], ["noise-curve", "--set", "points=!!python/object/apply:os.system [ls]"],
    ["noise-curve", "--set", "points={a: 1}"], ["noise-curve", "--jobs", "0"], ["noise-curve", "--jobs", "-1"],
    ["noise-curve", "--jobs", "x"], ["noise-curve", "--shard", "x"], ["noise-curve", "--shard", "1/1"],
    ["noise-curve", "--shard", "2/1"], ["noise-curve", "--shard", "-1/2"], ["noise-curve", "--shard", "0/0"],
    ["noise-curve", "--shard", "a/b"], ["noise-curve", "--seeds", "1"],
    ["class-dependent", "--preset", "smoke", "--seeds", "1", "1"],
    ["class-dependent", "--preset", "smoke", "--seeds", "-1"],
    ["class-dependent", "--preset", "smoke", "--seeds", "2147483648"],
    ["class-dependent", "--preset", "smoke", "--seeds", "x"],
    ["class-dependent", "--preset", "smoke", "--set", "seeds=[]"],
    ["class-dependent", "--preset", "smoke", "--set", "seeds=[0, 0]"],
    ["class-dependent", "--preset", "smoke", "--set", "train={lr: .nan}"],
    ["class-dependent", "--preset", "smoke", "--set", "epochs=-1", "--no-progress"],
    ["class-dependent", "--preset", "smoke", "--set", "train={lr: -1e6}", "--no-progress"],
    ["class-dependent", "--preset", "smoke", "--set", "dataset=nope", "--no-progress"],
    ["class-dependent", "--preset", "smoke", "--set", "batch_size=99999999999999999999", "--no-progress"],
    ["class-dependent", "--preset", "smoke", "--set", "epochs=x"], ["class-dependent", "--set", "epochs=[x]"],
    ["class-dependent", "--set", "epochs=2020-01-01"], ["class-dependent", "--set", "val_fraction=true"],
    ["class-dependent", "--preset", "smoke", "--set", "method_options={a: 1}", "--no-progress"],
    ["class-dependent", "--preset", "smoke", "--set", "method_options={ivon: 1}", "--no-progress"],
    ["class-dependent", "--set", "train=x"], ["class-dependent", "--set", "kappas=x"],
    ["theorems", "--preset", "smoke", "--set", "classes=-1"], ["theorems", "--preset", "smoke", "--set", "lr=-1"],
    ["theorems", "--preset", "smoke", "--set", "rho=0"], ["theorems", "--preset", "smoke", "--set", "tolerance=x"],
    ["natural-noise", "--preset", "smoke", "--set", "stand_in_seed=-1"],
    ["natural-noise", "--preset", "smoke", "--set", "data_dir={a: 1}"],
    ["noise-gallery", "--preset", "smoke", "--set", "top_k=-1"],
    ["noise-gallery", "--preset", "smoke", "--set", "ls_alpha=2"],
    ["noise-gallery", "--preset", "smoke", "--set", "pair_class=-1"], ["demo", "--preset", "smoke", "--set", "top_k=0"],
    ["moons", "--preset", "smoke", "--set", "n=x"], ["moons", "--preset", "smoke", "--set", "models=-1"],
]  # fmt: skip


@pytest.mark.parametrize("args", RUN_BAD, ids=[" ".join(a) for a in RUN_BAD])
def test_run_bad_option(args, curve_folder, tmp_path, capsys):
    out = copy_of(curve_folder, tmp_path)
    assert_rejected(["run", *args, "--out", out], out, capsys)


@pytest.mark.parametrize("args", [["noise-curve", "--set", "points=2"], ["class-dependent", "--preset", "smoke",
                                  "--set", "epochs=0", "--no-progress"]], ids=["curve", "sweep"])  # fmt: skip
def test_run_bad_option_creates_nothing(args, tmp_path, capsys):
    assert_rejected(["run", *args, "--out", tmp_path / "new"], tmp_path, capsys)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_run_out_is_a_file(where, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    assert_rejected(["run", "noise-curve", "--preset", "smoke", "--out", out], tmp_path, capsys)


# ---------------------------------------------------------------------------------------------------------------
# report and the top level


def test_report_bad_inputs(curve_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for name, data in (("bad-config", b"\xff\x00"), ("bad-summary", b"")):
        (tmp_path / name).mkdir()
        (tmp_path / name / ("config.json" if name == "bad-config" else "summary.json")).write_bytes(data)
    cases = [[tmp_path / "missing"], [tmp_path / "file"], [tmp_path / "empty"], [tmp_path / "bad-config"],
             [tmp_path / "bad-summary"], [curve_folder, "--max-rows", "0"], [curve_folder, "--max-rows", "-1"],
             [curve_folder, "--max-rows", "x"], [curve_folder, "--nope"]]  # fmt: skip
    for args in cases:
        before = snapshot(tmp_path), snapshot(curve_folder)
        assert_one_line(*run_cli(["report", *args], capsys))
        assert (snapshot(tmp_path), snapshot(curve_folder)) == before


@pytest.mark.parametrize("argv", [["nope"], ["train"], ["suspects"], ["run", "--jobs"], ["report"], ["--nope"]])
def test_top_level(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_rejected(argv, tmp_path, capsys)


# ---------------------------------------------------------------------------------------------------------------
# the Python API: InputError (one line), nothing written

API_TRAIN_BAD = {
    "lr": ["0.1", None, math.nan, True], "epochs": [1.5, True, "1", 0], "seed": [-1, 2**31, True, 1.0],
    "corruption_seed": [-1, 2**40], "batch_size": [2**40, 0], "milestones": ["1", [1.5], [True], [-1]],
    "model_options": [[1], "x"], "data_options": ["x", None], "device": [3, "gpu", None], "dataset": [5, None],
    "progress": ["yes", 1], "momentum": [None, "0.9", math.inf], "val_fraction": ["0.1", math.nan],
    "weight_decay": [math.inf, -1.0], "lr_decay": [math.inf], "warmup_epochs": [math.nan],
    "num_workers": [-1, 1.0], "train_subset": [0, 1.5], "schedule": [5], "corruption": [None, 0.1],
}  # fmt: skip
API_IVON_BAD = {"ess": [math.inf, [1], -1.0, "AUTO"], "ess_factor": [math.inf, math.nan, "1"],
                "hess_init": [math.inf, 0.0], "ess_grid": [[], "x", [math.inf]], "beta2": [math.nan, 2.0],
                "clip_radius": [math.inf, 0.0], "beta1": [1.0, "0.9"]}  # fmt: skip
API_CASES = [("erm", k, v) for k, vs in API_TRAIN_BAD.items() for v in vs]
API_CASES += [("ivon", k, v) for k, vs in API_IVON_BAD.items() for v in vs]


@pytest.mark.parametrize(("method", "key", "value"), API_CASES, ids=[f"{m}-{k}={v!r}" for m, k, v in API_CASES])
def test_api_train_bad_value(method, key, value, erm_run, tmp_path):
    out = copy_of(erm_run, tmp_path)
    before = snapshot(out)
    base = dict(dataset="moons", model="logreg", epochs=1, device="cpu", progress=False, method=method)
    cfg = TrainConfig(**{**base, key: value})
    with pytest.raises(InputError) as err:
        train(cfg, out)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before


def test_api_train_zero_training_examples(tmp_path):
    from varsmooth.data import load_dataset

    data = load_dataset("moons")
    empty = type(data.train)(data.train.features[:0], data.train.labels[:0])
    import dataclasses

    with pytest.raises(InputError, match="empty|no training|0 examples"):
        train(TrainConfig(model="logreg", epochs=1, device="cpu", progress=False), tmp_path / "new",
              data=dataclasses.replace(data, train=empty))  # fmt: skip
    assert not (tmp_path / "new").exists()


API_EXPERIMENT_BAD = [
    ("noise-curve", {"f_min": -8.0, "f_max": 8.0, "points": "x", "variances": [1.0]}),
    ("noise-curve", {"f_min": -8.0, "f_max": 8.0, "points": 10}),  # a key missing
    ("noise-curve", {"f_min": -8.0, "f_max": 8.0, "points": 10, "variances": [1.0], "nope": 1}),
    ("noise-curve", [1, 2]),
    ("nope", {}),
]


@pytest.mark.parametrize(("exp_id", "cfg"), API_EXPERIMENT_BAD, ids=[str(i) for i in range(len(API_EXPERIMENT_BAD))])
def test_api_run_experiment_bad_config(exp_id, cfg, curve_folder, tmp_path):
    out = copy_of(curve_folder, tmp_path)
    before = snapshot(out)
    with pytest.raises(InputError):
        ex.run_experiment(exp_id, cfg, out, runtime=ex.Runtime(progress=False))
    assert snapshot(out) == before


@pytest.mark.parametrize("text", ["seeds=[1, 1]", "seeds=[-1]", "seeds=[]", "seeds=x", "seed=-1", "epochs=.inf"])
def test_api_resolve_preset_bad_value(text):
    key, value = ex.parse_override(text)
    with pytest.raises(InputError):
        ex.resolve_preset("class-dependent", "smoke", {key: value})


def test_yaml_reads_exponent_floats_as_numbers():
    assert ex.parse_override("train={lr: 1e6}") == ("train", {"lr": 1e6})
    assert ex.parse_override("lr=-2.5E-3")[1] == -2.5e-3 and ex.parse_override("x=1_0")[1] == 10
    assert ex.parse_override("x=1e")[1] == "1e" and ex.parse_override("x=10")[1] == 10
    with pytest.raises(InputError):
        ex.parse_override("x=!!python/object/apply:os.system [ls]")


def _noise_model():
    torch.manual_seed(0)
    return build_model("mlp", 3, (2,), hidden=[4])


NOISE_BAD = {
    "nan-inputs": lambda m: dict(inputs=torch.tensor([[math.nan, 0.0]] * 4)),
    "inf-inputs": lambda m: dict(inputs=torch.tensor([[math.inf, 0.0]] * 4)),
    "nan-inputs-linearized": lambda m: dict(inputs=torch.tensor([[math.nan, 0.0]] * 4), method="linearized"),
    "nan-dataset": lambda m: dict(inputs=torch.utils.data.TensorDataset(torch.full((4, 2), math.nan))),
    "nan-std": lambda m: dict(std=math.nan),
    "inf-std": lambda m: dict(std=math.inf),
    "negative-std": lambda m: dict(std=-1.0),
    "nan-soft-labels": lambda m: dict(labels=np.full((4, 3), math.nan)),
    "string-labels": lambda m: dict(labels=np.array(["a"] * 4)),
    "zero-samples": lambda m: dict(samples=0),
    "float-samples": lambda m: dict(samples=1.5),
    "zero-batch": lambda m: dict(batch_size=0),
    "zero-chunk": lambda m: dict(method="linearized", sample_chunk=0),
    "method": lambda m: dict(method="nope"),
    "empty-inputs": lambda m: dict(inputs=torch.zeros(0, 2)),
    "nan-weights": lambda m: (torch.nn.init.constant_(next(m.parameters()), math.nan), {})[1],
}


@pytest.mark.parametrize("case", list(NOISE_BAD))
def test_api_network_label_noise_bad_input(case):
    model = _noise_model()
    kwargs = {"inputs": torch.randn(4, 2), "std": 0.1, "samples": 2, **NOISE_BAD[case](model)}
    with torch.no_grad():
        with pytest.raises(InputError):
            label_noise(model, kwargs.pop("inputs"), kwargs.pop("std"), **kwargs)


@pytest.mark.parametrize("kwargs", [{"samples": 0}, {"seed": -1}, {"batch_size": 1.5}, {"device": "foo"}])
def test_api_score_checkpoint_bad_argument(kwargs, ivon_run):
    from varsmooth.detect import score_checkpoint

    with pytest.raises(InputError):
        score_checkpoint(ivon_run, **kwargs)


JSON_FILES = {"empty": b"", "truncated": b'{"config": {"a', "garbage": bytes(range(256)), "not-utf8": b'"\xff"'}


@pytest.mark.parametrize("case", list(JSON_FILES))
def test_api_corrupt_result_json_in_a_sweep(case, tmp_path):
    path = tmp_path / "runs" / "a" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(JSON_FILES[case])
    with pytest.raises(InputError, match="result.json"):
        load_result(tmp_path, {"name": "a"})


@pytest.mark.parametrize("case", ["list", "no-key"])
def test_api_read_json_foreign_shape(case, tmp_path):
    path = tmp_path / "search.json"
    path.write_text("[1]" if case == "list" else '{"x": 1}')
    with pytest.raises(InputError, match="search.json"):
        vio.read_json(path, keys=("config",))


@pytest.mark.parametrize("data", [b"\xff\xfe\x00", b'a,"b\n1,2\n' + b"x" * 200000])
def test_api_corrupt_csv(data, tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match="results.csv"):
        vio.read_csv(path)


def test_api_unknown_train_option():
    with pytest.raises(InputError, match="unknown training option"):
        TrainConfig.from_dict({"nope": 1})


# ---------------------------------------------------------------------------------------------------------------
# operating-system errors: one line each; the folder still loads and resumes


@pytest.mark.parametrize(("code", "word"), [(errno.ENOSPC, "no space"), (errno.EROFS, "read-only"),
                                            (errno.EACCES, "permission"), (errno.EEXIST, "in the way"),
                                            (errno.ENOTDIR, "in the way")])  # fmt: skip
def test_os_error_message_is_one_line_naming_the_file(code, word):
    text = os_error_message(OSError(code, os.strerror(code), "/runs/a/config.json"))
    assert word in text and "/runs/a/config.json" in text and "\n" not in text and errno.errorcode[code] in text


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True, timeout=20).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=20)


def _assert_loads_and_resumes(out: Path, lone: Path, capsys) -> None:
    assert ckpt.load(out).epoch == 1 and vio.read_json(out / "config.json", keys=("config",))
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    rc, _ = run_cli([*TRAIN, "--epochs", "2", "--out", out], capsys)
    assert rc == 0 and ckpt.load(out).epoch == 2
    # resumed == a lone 2-epoch run of the same (1-epoch) schedule
    assert run_cli([*TRAIN, "--epochs", "2", "--schedule-epochs", "1", "--out", lone], capsys)[0] == 0
    a, b = ckpt.load(out).model, ckpt.load(lone).model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full(tmp_path, capsys, monkeypatch):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk))
    try:
        out = disk / "run"
        assert run_cli([*TRAIN, "--out", out], capsys)[0] == 0
        if mounted:  # fill the tiny disk
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                with pytest.raises(OSError):
                    while True:
                        os.write(fd, b"\0" * 4096)
            finally:
                os.close(fd)
        else:  # no tmpfs here: every write of the library's atomic files runs out of space

            def full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(vio.os, "fsync", full)
        rc, err = run_cli([*TRAIN, "--epochs", "2", "--out", out], capsys)
        assert_one_line(rc, err)
        assert "no space left" in err and str(out) in err
        rc, err = run_cli(["run", "noise-curve", "--preset", "smoke", "--out", disk / "curve", "--no-progress"], capsys)
        assert_one_line(rc, err)
        if mounted:
            (disk / "filler").unlink()
        else:
            monkeypatch.undo()
        _assert_loads_and_resumes(out, tmp_path / "lone", capsys)
    finally:
        if mounted:
            _umount(disk)


def test_read_only_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_cli([*TRAIN, "--out", out], capsys)[0] == 0
    (out / "suspects").mkdir()
    how = "chmod"
    if os.geteuid() == 0:  # root ignores permissions: a read-only bind mount, else a simulated EROFS
        how = "mount" if _mount("--bind", str(out), str(out)) else "simulate"
        if how == "mount" and not _mount("-o", "remount,bind,ro", str(out)):
            _umount(out)
            how = "simulate"
    if how == "chmod":
        for p in (out, out / "suspects"):
            p.chmod(0o555)
    elif how == "simulate":

        def read_only(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path.parent))

        monkeypatch.setattr(vio, "_mkstemp", read_only)
    try:
        before = snapshot(out)
        rc, err = run_cli([*TRAIN, "--epochs", "2", "--out", out], capsys)
        assert_one_line(rc, err)
        assert ("read-only" in err or "permission" in err) and str(out) in err
        rc, err = run_cli(["report", out], capsys)
        assert_one_line(rc, err)
        assert snapshot(out) == before
    finally:
        if how == "mount":
            _umount(out)
        elif how == "chmod":
            for p in (out, out / "suspects"):
                p.chmod(0o755)
        monkeypatch.undo()
    _assert_loads_and_resumes(out, tmp_path / "lone", capsys)


def test_orphaned_tmp_files_are_removed_on_next_open(erm_run, tmp_path, capsys):
    out = copy_of(erm_run, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = vio._HOST
    orphan = out / f".checkpoint.pt.{host}.{int(dead.stdout)}.{uuid.uuid4().hex[:8]}.tmp"
    live = out / f".config.json.{host}.{os.getpid()}.abcd1234.tmp"
    other_host = out / f".config.json.elsewhere.{int(dead.stdout)}.abcd1234.tmp"
    for p in (orphan, live, other_host):
        p.write_bytes(b"half")
    assert run_cli([*TRAIN, "--epochs", "2", "--out", out], capsys)[0] == 0
    assert not orphan.exists() and live.exists() and other_host.exists()


def test_count_of_generated_bad_inputs():
    """The issue asks for at least 250 generated bad inputs across the subcommands and the API."""
    cli_cases = (len(TRAIN_CASES) + len(TRAIN_FRESH) + 2 + len(LABEL_FILES) + 1 + 2 * len(CHECKPOINT_CASES)
                 + len(CONFIG_JSON) + len(SEARCH_JSON) + 2 + len(SUSPECTS_BAD) + 5 + len(RUN_BAD) + 2 + 2 + 9 + 6)
    api_cases = (len(API_CASES) + 1 + len(API_EXPERIMENT_BAD) + 6 + len(NOISE_BAD) + 4 + len(JSON_FILES) + 2 + 2
                 + 1)  # fmt: skip
    count = cli_cases + api_cases
    assert count >= 250, count


# ---------------------------------------------------------------------------------------------------------------
# issue 24: the classes of bad input that got past the contract, each a family of generated cases. CLI cases run
# in-process (one torch import) unless they could exhaust memory or hang: those run in one subprocess under a
# memory limit (RLIMIT_AS) and a per-case alarm (tests/_guarded_cli.py), so a regression fails instead of taking
# the machine down.

GUARD_GIB = 3.0
ROWS = 20  # examples in the generated data files


def _xy(n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 2)), np.arange(n) % 2


def _csv(labels: list[str]) -> bytes:
    x, _ = _xy(len(labels))
    return ("a,b,label\n" + "".join(f"{r[0]:.3f},{r[1]:.3f},{v}\n" for r, v in zip(x, labels, strict=True))).encode()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _labels_with(value) -> np.ndarray:
    y = _xy()[1].astype(type(value) if isinstance(value, float) else np.int64)
    y[-1] = value
    return y


def _forged_npy(shape: tuple[int, ...]) -> bytes:
    """An .npy header declaring ``shape`` (int64) followed by 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


def _forged_npz(shape: tuple[int, ...]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X.npy", _npy(_xy()[0]))
        z.writestr("y.npy", _forged_npy(shape))
    return buf.getvalue()


GOOD_X, GOOD_Y = _xy()
# --data files for `suspects --data` and load_user_data: name -> (bytes, words the one line must hold)
DATA_FILES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # resource exhaustion: one label value, bounded before anything of size K is built
    "label-1e12.csv": (_csv([*map(str, GOOD_Y[:-1]), "1000000000000"]), ("line 21", "1000000000000", "[0, 19]")),
    "label-5e6.csv": (_csv([*map(str, GOOD_Y[:-1]), "5000000"]), ("line 21", "5000000", "[0, 19]")),
    "label-1e12.npz": (_npz(X=GOOD_X, y=_labels_with(10**12)), ("row 20", "1000000000000", "[0, 19]")),
    "label-5e6.npz": (_npz(X=GOOD_X, y=_labels_with(5_000_000)), ("row 20", "5000000", "[0, 19]")),
    "label-1e12-float.npz": (_npz(X=GOOD_X, y=_labels_with(1e12)), ("row 20", "1000000000000",)),
    "label-20.npz": (_npz(X=GOOD_X, y=_labels_with(ROWS)), ("row 20", "label 20", "[0, 19]")),
    "forged-header.npz": (_forged_npz((10**12,)), ("declares 8000000000000 bytes",)),
    # values silently changed or ignored
    "complex.npz": (_npz(X=GOOD_X + 1j, y=GOOD_Y), ("complex",)),
    "empty-label.csv": (_csv([*map(str, GOOD_Y[:-1]), ""]), ("line 21", "empty")),
    "mixed-labels.csv": (_csv([*map(str, GOOD_Y[:-1]), "cat"]), ("line 2", "'0'", "line 21", "'cat'", "not both")),
    "mixed-labels.npz": (_npz(X=GOOD_X, y=np.array([*map(str, GOOD_Y[:-1]), "cat"])), ("row 20", "'cat'")),
    # weak messages: the row and the value; a foreign file named as what it is not
    "label-negative.csv": (_csv(["-1", *map(str, GOOD_Y[1:])]), ("line 2", "-1")),
    "label-fraction.csv": (_csv([*map(str, GOOD_Y[:-1]), "1.5"]), ("line 21", "1.5")),
    "label-nan.npz": (_npz(X=GOOD_X, y=_labels_with(math.nan)), ("row 20", "nan")),
    "random.npz": (bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), ("not a valid .npz",)),
    "random-zip-magic.npz": (b"PK\x03\x04" + bytes(range(256)) * 8, ("not a valid .npz",)),
    "empty.npz": (b"", ("not a valid .npz",)),
    "truncated.npz": (_npz(X=GOOD_X, y=GOOD_Y)[:300], ("truncated.npz",)),
}
BIG_LABEL_FILES = [n for n in DATA_FILES if n.startswith(("label-1e12", "label-5e6", "forged"))]


def _write_data(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(DATA_FILES[name][0])
    return folder / name


@pytest.mark.parametrize("name", list(DATA_FILES))
def test_api_user_data_bad_file(name, tmp_path):
    from varsmooth.data.userdata import load_user_data

    path = _write_data(tmp_path, name)
    with pytest.raises(InputError) as err:
        load_user_data(path)
    text = str(err.value)
    assert "\n" not in text and name in text and "pickle" not in text, text
    for word in DATA_FILES[name][1]:
        assert word in text, (word, text)


NPY_PAIRS = {  # (features .npy, labels .npy) -> words
    "labels-5e6": (_npy(GOOD_X), _npy(_labels_with(5_000_000)), ("row 20", "5000000")),
    "labels-forged": (_npy(GOOD_X), _forged_npy((10**12,)), ("declares", "truncated")),
    "features-forged": (_forged_npy((10**6, 10**6)), _npy(GOOD_Y), ("declares",)),
    "features-random": (bytes(range(256)) * 4, _npy(GOOD_Y), ("not a valid .npy",)),
    "features-complex": (_npy(GOOD_X + 1j), _npy(GOOD_Y), ("complex",)),
    "labels-object": (_npy(GOOD_X), _npy(np.array([{}] * ROWS, dtype=object)), ("objects",)),
}


@pytest.mark.parametrize("case", list(NPY_PAIRS))
def test_api_user_data_bad_npy_pair(case, tmp_path):
    from varsmooth.data.userdata import load_user_data

    x, y, words = NPY_PAIRS[case]
    (tmp_path / "x.npy").write_bytes(x)
    (tmp_path / "y.npy").write_bytes(y)
    with pytest.raises(InputError) as err:
        load_user_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_api_class_names_are_capped(tmp_path):
    from varsmooth.data.userdata import load_user_data
    from varsmooth.data.validation import MAX_CLASSES

    n = MAX_CLASSES + 1
    (tmp_path / "names.csv").write_text("a,label\n" + "".join(f"{i},c{i}\n" for i in range(n)))
    with pytest.raises(InputError, match=f"{n} classes; at most {MAX_CLASSES}"):
        load_user_data(tmp_path / "names.csv")


# --- image folders: a dangling symlink, an unreadable class folder, a truncated image, a size out of bounds


def _image_folder(root: Path, case: str) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (2048, 4) if case == "huge" else (16, 16)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / cls / f"{i}.png")
    if case == "dangling-file":
        (root / "a" / "9.png").symlink_to(root / "gone.png")
    elif case == "dangling-class":
        (root / "c").symlink_to(root / "gone")
    elif case == "truncated":
        data = (root / "b" / "1.png").read_bytes()
        (root / "b" / "1.png").write_bytes(data[: len(data) * 2 // 3])  # the header whole, the pixels cut
    elif case == "not-an-image":
        (root / "b" / "2.png").write_bytes(b"not a png")
    return root


IMAGE_CASES = {  # case -> (load_user_data options, words)
    "dangling-file": ({}, ("9.png", "dangling symlink")),
    "dangling-class": ({}, ("c", "dangling symlink")),
    "truncated": ({}, ("1.png", "truncated")),
    "not-an-image": ({}, ("2.png",)),
    "huge": ({}, ("4x2048", "--image-size")),
    "size-100000": ({"image_size": 100000}, ("100000", "1024")),
    "size-3": ({"image_size": 3}, ("3",)),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_api_user_image_folder_bad(case, tmp_path):
    from varsmooth.data.userdata import load_user_data

    root = _image_folder(tmp_path / "imgs", case)
    options, words = IMAGE_CASES[case]
    with pytest.raises(InputError) as err:
        load_user_data(root, **options)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_api_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    from varsmooth.data import images
    from varsmooth.data.userdata import load_user_data

    root = _image_folder(tmp_path / "imgs", "ok")
    if os.geteuid() == 0:  # root reads any folder: the permission error is simulated
        real = os.scandir

        def scandir(path):
            if Path(path) == root / "b":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real(path)

        monkeypatch.setattr(images.os, "scandir", scandir)
    else:
        (root / "b").chmod(0)
    try:
        with pytest.raises(InputError, match=r"cannot read the image folder .*/b'.*permission denied"):
            load_user_data(root)
    finally:
        (root / "b").chmod(0o755)


# --- YAML: aliases (a loop, an exponential expansion), depth, duplicate keys

LAUGHS = "[" + ", ".join([f"&a0 [{', '.join(['x'] * 9)}]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                             for i in range(1, 9)]) + "]"  # fmt: skip
YAML_BAD = {  # --set value -> words
    "alias-loop": ("&a [*a]", ("alias *a",)),
    "alias-loop-map": ("&a {x: *a}", ("alias *a",)),
    "billion-laughs": (LAUGHS, ("alias *a0",)),
    "deep-40": ("[" * 40 + "]" * 40, ("deeper than 32",)),
    "deep-100000": ("[" * 100000 + "]" * 100000, ("deeper than 32",)),
    "duplicate-key": ("{lr: 0.1, lr: 0.2}", ("'lr' is given twice",)),
    "duplicate-nested": ("{a: {b: 1, b: 2}}", ("'b' is given twice",)),
}


@pytest.mark.parametrize("case", list(YAML_BAD))
def test_api_yaml_bad_override(case):
    text, words = YAML_BAD[case]
    with pytest.raises(InputError) as err:
        ex.parse_override(f"train={text}")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_api_yaml_presets_still_load():
    assert all(ex.presets(e) for e in ex.experiments())


# --- paths: empty, names too long, not regular files


def test_api_check_folder_refuses_empty_and_long_names(tmp_path):
    with pytest.raises(InputError, match="empty"):
        vio.check_folder("")
    with pytest.raises(InputError, match="bytes; this file system allows"):
        vio.check_folder(tmp_path / "a" / ("n" * 300) / "run")
    with pytest.raises(InputError, match="bytes long; paths are limited to"):
        vio.check_folder(tmp_path.joinpath(*["n" * 200] * 25))
    assert list(tmp_path.iterdir()) == []


def test_api_make_folder_removes_what_it_made(tmp_path, monkeypatch):
    real = os.mkdir

    def mkdir(path, mode=0o777):
        if Path(path).name == "c":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        real(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(PermissionError):
        vio.make_folder(tmp_path / "a" / "b" / "c" / "d")
    with pytest.raises(OSError):
        vio.write_json(tmp_path / "a" / "b" / "c" / "x.json", {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
def test_api_open_regular_refuses_special_files(kind, tmp_path):
    import socket

    path = tmp_path / "x.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    with pytest.raises(InputError, match="not a regular file|is a folder"):
        vio.open_regular(path)
    if kind == "socket":
        s.close()


def test_api_torch_save_on_a_full_disk_raises_the_os_error(tmp_path, monkeypatch):
    _simulate_full_disk(monkeypatch)
    with pytest.raises(OSError) as err:
        vio.torch_save({"w": torch.zeros(1000)}, tmp_path / "checkpoint.pt")
    assert err.value.errno == errno.ENOSPC and "checkpoint.pt" in os_error_message(err.value)
    assert list(tmp_path.iterdir()) == []


def _simulate_full_disk(monkeypatch, after: int = 300) -> None:
    """Binary writes of atomic_open fail with ENOSPC after ``after`` bytes (as torch's zip writer meets them)."""
    real = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, f):
            self.f, self.n = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.n += len(b)
            if self.n > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(b)

        def fileno(self):
            return self.f.fileno()

        def close(self):
            self.f.close()
            super().close()

    def fdopen(fd, mode="r", **kw):
        if mode == "wb":
            return io.BufferedWriter(Full(real(fd, mode, buffering=0)), 64)
        return real(fd, mode, **kw)

    monkeypatch.setattr(vio.os, "fdopen", fdopen)


def test_api_bundled_dataset_refuses_a_data_dir(tmp_path):
    from varsmooth.data import load_dataset

    with pytest.raises(InputError, match="not used by the bundled dataset 'moons'"):
        load_dataset("moons", tmp_path)


def test_api_complex_features_refused():
    from varsmooth.data import validate_features

    with pytest.raises(InputError, match="complex"):
        validate_features(np.ones((2, 2), dtype=complex))


@pytest.mark.parametrize("text", ["train={seed: -1}", "train={seed: 2147483648}", "method_options={ivon: {seed: -1}}",
                                  "train={corruption_seed: -5}"])  # fmt: skip
def test_api_nested_seed_out_of_range(text):
    key, value = ex.parse_override(text)
    with pytest.raises(InputError, match="seed=.* is not allowed"):
        ex.resolve_preset("class-dependent", "smoke", {key: value})


# --- the CLI, in-process: every class, with a byte-for-byte snapshot of --out and its parents (tmp_path)

SUSPECTS_DATA = ["suspects", "--epochs", "1", "--device", "cpu"]
LONG = "n" * 300


def _cli_case(case: str, tmp: Path) -> list:
    """The argv of CLI case ``case``, its files written under ``tmp``."""
    good = tmp / "in" / "good.npz"
    good.parent.mkdir(parents=True, exist_ok=True)
    good.write_bytes(_npz(X=GOOD_X, y=GOOD_Y))
    new = tmp / "new" / "deeper" / "out"
    if case.startswith("data:"):
        return [*SUSPECTS_DATA, "--data", _write_data(tmp / "in", case[5:]), "--out", new]
    table = {
        # tracebacks
        "set-alias-loop": ["run", "noise-curve", "--set", "variances=&a [*a]", "--out", new],
        "set-deep": ["run", "noise-curve", "--set", "variances=" + "[" * 5000 + "]" * 5000, "--out", new],
        # writes where nothing should be written
        "train-out-empty": [*TRAIN, "--out", ""],
        "run-out-empty": ["run", "noise-curve", "--preset", "smoke", "--out", ""],
        "suspects-data-out-empty": [*SUSPECTS_DATA, "--data", good, "--out", ""],
        "report-dir-empty": ["report", ""],
        "report-into-empty": ["report", tmp / "in", "--into", ""],
        "train-out-long": [*TRAIN, "--out", tmp / "new" / LONG / "run"],
        "run-out-long": ["run", "noise-curve", "--preset", "smoke", "--out", tmp / "new" / LONG / "run"],
        "suspects-data-out-long": [*SUSPECTS_DATA, "--data", good, "--out", tmp / "new" / LONG / "s"],
        "report-into-long": ["report", tmp / "in", "--into", tmp / "new" / LONG / "r.md"],
        # values silently changed or ignored
        "set-seed-negative": ["run", "class-dependent", "--preset", "smoke", "--set", "train={seed: -1}", "--out",
                              new],
        "set-duplicate-key": ["run", "class-dependent", "--preset", "smoke", "--set", "train={lr: 0.1, lr: 0.2}",
                              "--out", new],
        "train-bundled-data-dir": [*TRAIN, "--data-dir", tmp / "in", "--out", new],
        "run-bundled-data-dir": ["run", "class-dependent", "--preset", "smoke", "--data-dir", tmp / "in",
                                 "--no-progress", "--out", new],
        "suspects-data-data-dir": [*SUSPECTS_DATA, "--data", good, "--data-dir", tmp / "in", "--out", new],
        "suspects-data-image-size-csv": [*SUSPECTS_DATA, "--data", good, "--image-size", "32", "--out", new],
        # checks after work: refused before the data are read
        "suspects-data-out-file": [*SUSPECTS_DATA, "--data", good, "--out", good],
        "suspects-data-out-below-file": [*SUSPECTS_DATA, "--data", good, "--out", good / "s"],
        "suspects-data-ess-negative": [*SUSPECTS_DATA, "--data", good, "--ess", "-1", "--out", new],
        "suspects-data-ess-nan": [*SUSPECTS_DATA, "--data", good, "--ess", "nan", "--out", new],
        "suspects-data-ess-x": [*SUSPECTS_DATA, "--data", good, "--ess", "xN", "--out", new],
        "suspects-data-model": [*SUSPECTS_DATA, "--data", good, "--model", "nope", "--out", new],
        "suspects-data-device": [*SUSPECTS_DATA, "--data", good, "--device", "tpu", "--out", new],
        "suspects-data-seed": [*SUSPECTS_DATA, "--data", good, "--seed", "-1", "--out", new],
    }  # fmt: skip
    return table[case]


CLI_DATA_CASES = [f"data:{n}" for n in DATA_FILES if n not in BIG_LABEL_FILES]
CLI_NAMES = ["set-alias-loop", "set-deep", "train-out-empty", "run-out-empty", "suspects-data-out-empty",
             "report-dir-empty", "report-into-empty", "train-out-long", "run-out-long", "suspects-data-out-long",
             "report-into-long", "set-seed-negative", "set-duplicate-key", "train-bundled-data-dir",
             "run-bundled-data-dir", "suspects-data-data-dir", "suspects-data-image-size-csv",
             "suspects-data-out-file", "suspects-data-out-below-file", "suspects-data-ess-negative",
             "suspects-data-ess-nan", "suspects-data-ess-x", "suspects-data-model", "suspects-data-device",
             "suspects-data-seed"]  # fmt: skip
CLI_CASES = [*CLI_DATA_CASES, *CLI_NAMES]


CHECKED_FIRST = {c for c in CLI_NAMES if c.startswith(("suspects-data-out-", "suspects-data-ess", "suspects-data-model",
                                                       "suspects-data-device", "suspects-data-seed"))
                 and not c.endswith(("-empty", "-long"))}  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_issue24_case(case, tmp_path, capsys, monkeypatch):
    argv = _cli_case(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    if case in CHECKED_FIRST:

        def never(*args, **kwargs):
            raise AssertionError("the data were read before every option was checked")

        monkeypatch.setattr("varsmooth.data.userdata.load_user_data", never)
    err = assert_rejected(argv, tmp_path, capsys)
    assert "pickle" not in err


def test_cli_truncated_image_is_found_before_training(tmp_path, capsys, monkeypatch):
    from varsmooth import detect

    root = _image_folder(tmp_path / "imgs", "truncated")

    def never(*args, **kwargs):
        raise AssertionError("training started before every image was read")

    monkeypatch.setattr(detect, "fit_probs", never)
    err = assert_rejected([*SUSPECTS_DATA, "--data", root, "--out", tmp_path / "new" / "s"], tmp_path, capsys)
    assert "1.png" in err and "truncated" in err


@pytest.mark.parametrize("where", ["new", "existing"])
def test_cli_full_disk_during_the_checkpoint_write(where, erm_run, tmp_path, capsys, monkeypatch):
    out = copy_of(erm_run, tmp_path) if where == "existing" else tmp_path / "a" / "b" / "run"
    argv = [*TRAIN, "--epochs", "2", "--out", out]
    _simulate_full_disk(monkeypatch)
    before = snapshot(tmp_path)
    rc, err = run_cli(argv, capsys)
    assert_one_line(rc, err)
    assert "checkpoint.pt" in err and "no space left" in err
    if where == "new":
        assert snapshot(tmp_path) == before  # the folders it made are gone
    monkeypatch.undo()
    if where == "existing":
        assert ckpt.load(out).epoch == 1


# --- the CLI under the memory guard and the hang alarm, in one subprocess


def _guarded_cases(tmp: Path) -> dict[str, list]:
    cases: dict[str, list] = {}
    for name in BIG_LABEL_FILES:
        cases[f"data:{name}"] = [*SUSPECTS_DATA, "--data", _write_data(tmp / "in", name), "--out", tmp / "n" / "o"]
    (tmp / "in" / "x.npy").write_bytes(_npy(GOOD_X))
    (tmp / "in" / "y-5e6.npy").write_bytes(_npy(_labels_with(5_000_000)))
    (tmp / "in" / "y-forged.npy").write_bytes(_forged_npy((10**12,)))
    for y in ("y-5e6.npy", "y-forged.npy"):
        cases[f"npy:{y}"] = [*SUSPECTS_DATA, "--data", tmp / "in" / "x.npy", "--labels", tmp / "in" / y, "--out",
                             tmp / "n" / "o"]  # fmt: skip
    imgs = _image_folder(tmp / "imgs", "ok")
    cases["image-size-100000"] = [*SUSPECTS_DATA, "--data", imgs, "--image-size", "100000", "--out", tmp / "n" / "o"]
    cases["billion-laughs"] = ["run", "noise-curve", "--set", f"variances={LAUGHS}", "--out", tmp / "n" / "o"]
    # hangs: a FIFO (or a socket, a device) where a file is read
    for name in ("fifo.csv", "fifo.npz", "fifo-labels.npy", "fifo-noisy.npy"):
        os.mkfifo(tmp / "in" / name)
    os.mkfifo(imgs / "a" / "fifo.png")
    fifo_run = tmp / "fifo-run"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "config.json")
    cases["fifo-data-csv"] = [*SUSPECTS_DATA, "--data", tmp / "in" / "fifo.csv", "--out", tmp / "n" / "o"]
    cases["fifo-data-npz"] = [*SUSPECTS_DATA, "--data", tmp / "in" / "fifo.npz", "--out", tmp / "n" / "o"]
    cases["fifo-labels"] = [*SUSPECTS_DATA, "--data", tmp / "in" / "x.npy", "--labels", tmp / "in" / "fifo-labels.npy",
                            "--out", tmp / "n" / "o"]  # fmt: skip
    cases["fifo-image"] = [*SUSPECTS_DATA, "--data", imgs, "--out", tmp / "n" / "o"]
    cases["fifo-noisy-labels"] = [*TRAIN, "--noisy-labels", tmp / "in" / "fifo-noisy.npy", "--out", tmp / "n" / "o"]
    cases["fifo-report-config"] = ["report", fifo_run]
    cases["device-data"] = [*SUSPECTS_DATA, "--data", "/dev/zero", "--out", tmp / "n" / "o"]
    return {k: [str(a) for a in v] for k, v in cases.items()}


GUARDED_WORDS = {"data:label-1e12.csv": "1000000000000", "data:label-5e6.npz": "5000000", "npy:y-5e6.npy": "5000000",
                 "npy:y-forged.npy": "declares", "image-size-100000": "100000", "billion-laughs": "alias",
                 "fifo-data-csv": "FIFO", "fifo-labels": "FIFO", "fifo-image": "fifo.png", "fifo-noisy-labels": "FIFO",
                 "device-data": "character device"}  # fmt: skip


def test_cli_guarded_against_exhaustion_and_hangs(tmp_path):
    cases = _guarded_cases(tmp_path)
    spec = tmp_path.parent / f"{tmp_path.name}-cases.json"
    spec.write_text(json.dumps([{"argv": argv, "cwd": str(tmp_path)} for argv in cases.values()]))
    before = snapshot(tmp_path)
    script = Path(__file__).with_name("_guarded_cli.py")
    proc = subprocess.run([sys.executable, str(script), str(spec), str(GUARD_GIB)], capture_output=True, text=True,
                          timeout=60 * (len(cases) + 2), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(zip(cases, json.loads(proc.stdout.splitlines()[-1]), strict=True))
    for name, res in results.items():
        assert res["rc"] is not None, (name, res["err"])
        assert_one_line(res["rc"], res["err"])
        assert GUARDED_WORDS.get(name, "") in res["err"], (name, res["err"])
    assert snapshot(tmp_path) == before
    assert len(results) >= 15
