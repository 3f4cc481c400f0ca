"""The comparison experiments (noisy-accuracy, fixed-hessian, class-dependent, hessian-init, natural-noise):
smoke presets end to end through the CLI, protocol selection against the raw results, resume after an
interruption (bitwise-equal results), and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from varsmooth.cli import main
from varsmooth.errors import InputError
from varsmooth.experiments import comparison as C
from varsmooth.experiments import grids, resolve_preset, selection
from varsmooth.io import read_csv

IDS = ["noisy-accuracy", "fixed-hessian", "class-dependent", "hessian-init", "natural-noise"]
PNGS = {
    "noisy-accuracy": ["accuracy_vs_hyperparameter.png", "summary_paper.png", "summary_fair.png", "reliability.png"],
    "class-dependent": ["accuracy_vs_hyperparameter.png", "summary_paper.png", "summary_fair.png", "reliability.png"],
    "natural-noise": ["accuracy_vs_hyperparameter.png", "summary_paper.png", "summary_fair.png", "reliability.png"],
    "fixed-hessian": ["fixed_hessian.png"],
    "hessian-init": ["accuracy_vs_h0.png"],
}



def run_cli(exp_id: str, out: Path, *extra: str) -> int:
    return main(["run", exp_id, "--preset", "smoke", "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    codes = {exp_id: run_cli(exp_id, root / exp_id) for exp_id in IDS}
    return root, codes


@pytest.mark.parametrize("exp_id", IDS)
def test_smoke_preset_writes_its_files(smoke_outputs, exp_id):
    root, codes = smoke_outputs
    out = root / exp_id
    assert codes[exp_id] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == exp_id and summary["preset"] == "smoke"
    assert summary["runs_finished"] == summary["runs_total"] > 0
    rows = read_csv(out / "results.csv")
    header = list(rows[0])
    expected = list(grids.TAGS) + (["kappa"] if exp_id == "class-dependent" else []) + ["metric", "value"]
    assert header == expected
    runs = {tuple(r[c] for c in header[:-2]) for r in rows}
    assert len(runs) == summary["runs_total"]  # one row per run and metric
    assert {"test_acc", "val_acc", "corruption_realised_rate"} <= {r["metric"] for r in rows}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows if r["metric"].endswith("_acc"))
    ivon = [r for r in rows if r["method"].startswith("ivon")]
    assert {"test_pred_acc", "sigma_mean", "train_noise_l1"} <= {r["metric"] for r in ivon}
    for name in PNGS[exp_id]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in summary["figures"]


def _by_run(rows, metric):
    return {(r["corruption"], r.get("kappa", ""), r["method"], r["alpha"], r["rho"], r["ess_factor"], r["h0"]): float(
        r["value"]) for r in rows if r["metric"] == metric and r["seed"] == "0"}  # fmt: skip


@pytest.mark.parametrize("exp_id", ["noisy-accuracy", "class-dependent"])
def test_protocol_selection_matches_raw_results(smoke_outputs, exp_id):
    root, _ = smoke_outputs
    out = root / exp_id
    rows = read_csv(out / "results.csv")
    setting = "kappa" if exp_id == "class-dependent" else "corruption"
    norm = (lambda v: str(float(v))) if setting == "kappa" else str
    test, val = _by_run(rows, "test_acc"), _by_run(rows, "val_acc")
    summary = json.loads((out / "summary.json").read_text())
    table = {(norm(r[setting]), r["protocol"], r["method"]): r for r in summary["table"]}
    column = 1 if setting == "kappa" else 0
    for value in {r[setting] for r in rows}:
        for label, method in (("best LS", "ls"), ("best SAM", "sam")):
            cand = {k: v for k, v in test.items() if k[column] == value and k[2] == method}
            # paper protocol: the best grid value on the test set
            assert table[(norm(value), "paper", label)]["mean"] == max(cand.values())
            # fair protocol: the grid value with the best validation accuracy (first of ties), then its test accuracy
            best_val = max(cand, key=lambda k: val[k])
            assert table[(norm(value), "fair", label)]["mean"] == cand[best_val]
            # NLL and ECE of the pivots: at the chosen run (seed 0 is the only seed of the smoke presets)
            for metric in ("nll", "ece"):
                assert table[(norm(value), "fair", label)][metric]["mean"] == _by_run(rows, f"test_{metric}")[best_val]
        fixed = summary["ivon_fixed"][norm(value)]
        paper_ivon = table[(norm(value), "paper", "IVON (mean)")]
        # auto: nothing given
        ess = fixed["ess_factor"] if fixed["ess_factor"] == "auto" else f"{fixed['ess_factor']:g}"
        assert paper_ivon["chosen"] == f"ess_factor={ess}, h0={fixed['h0']:g}"
        ivon_key = (value, "", "ivon", "", "", str(fixed["ess_factor"]), str(fixed["h0"]))
        if column == 1:
            ivon_key = (next(r["corruption"] for r in rows if r["kappa"] == value), value, *ivon_key[2:])
        assert paper_ivon["mean"] == test[ivon_key]


def test_select_fixed_and_by_validation():
    recs = [
        {"alpha": a, "seed": s, "val_acc": v, "test_acc": t}
        for a, s, v, t in [(0.1, 0, 0.5, 0.9), (0.1, 1, 0.7, 0.8), (0.5, 0, 0.6, 0.7), (0.5, 1, 0.7, 0.6)]
    ]
    by_val = selection.select(recs, hp=("alpha",), report="test_acc", by="val_acc")
    assert by_val["chosen"] == {"alpha": 0.5} and by_val["values"] == {0: 0.7, 1: 0.6}
    assert by_val["mean"] == pytest.approx(0.65) and by_val["std"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    by_test = selection.select(recs, hp=("alpha",), report="test_acc", by="test_acc")
    assert by_test["chosen"] == {"alpha": 0.1}
    fixed = selection.select(recs, hp=("alpha",), report="test_acc", by=None, fixed={"alpha": 0.5})
    assert fixed["mean"] == by_val["mean"]
    assert selection.select(recs, hp=("alpha",), report="test_acc", by=None, fixed={"alpha": 0.3}) is None


class Interrupt:
    """A training callback that stops the process (as Ctrl-C would) after epoch ``at``'s evaluation."""

    def __init__(self, at: int):
        self.at = at

    def __call__(self, epoch, state):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_interrupted_sweep_resumes_to_identical_results(tmp_path, monkeypatch):
    sets = ["--set", "corruptions=[symmetric:0.4]", "--set", "alphas=[0.5]", "--set", "rhos=[0.1]",
            "--set", "ess_factors=[1.0]", "--set", "epochs=3"]  # fmt: skip
    assert run_cli("noisy-accuracy", tmp_path / "a", *sets) == 0

    real, calls = C.compare_run, []

    def flaky(cfg, run_dir, callbacks=()):
        calls.append(cfg["name"])
        if cfg["train"]["method"] == "ivon" and len(calls) == 4:  # the last run: stop it after epoch 2
            return real(cfg, run_dir, callbacks=[Interrupt(at=2)])
        return real(cfg, run_dir, callbacks=callbacks)

    monkeypatch.setattr(C, "compare_run", flaky)
    assert run_cli("noisy-accuracy", tmp_path / "b", *sets) == 130
    ivon_dir = tmp_path / "b" / "runs" / calls[-1]
    assert not (ivon_dir / "result.json").exists()
    assert len((ivon_dir / "metrics.jsonl").read_text().splitlines()) == 1  # checkpoint of epoch 1 only
    assert len(list((tmp_path / "b" / "runs").glob("*/result.json"))) == 3
    assert (tmp_path / "b" / "results.csv").exists() is False  # nothing summarised from a broken sweep

    calls.clear()
    assert run_cli("noisy-accuracy", tmp_path / "b", *sets) == 0
    assert len(calls) == 1  # only the interrupted run ran again (and resumed from its checkpoint)
    for name in ("results.csv", "selection.csv", "table.md"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def test_bad_preset_key_and_values(tmp_path, capsys):
    assert run_cli_preset("noisy-accuracy", "nope", tmp_path / "x") == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert run_cli("noisy-accuracy", tmp_path / "x", "--set", "bogus=1") == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    assert run_cli_preset("noisy-accuracy", "cpu", tmp_path / "y") == 2  # no --data-dir
    assert "--data-dir" in capsys.readouterr().err
    assert run_cli("noisy-accuracy", tmp_path / "x", "--set", "alphas=[1.5]") == 2
    assert "alphas" in capsys.readouterr().err
    assert run_cli("class-dependent", tmp_path / "x", "--set", "kappas=[0.6]") == 2
    assert "kappa" in capsys.readouterr().err
    assert run_cli("noisy-accuracy", tmp_path / "x", "--set", "corruptions=[gaussian:0.1]") == 2
    assert "gaussian" in capsys.readouterr().err
    assert run_cli("natural-noise", tmp_path / "x", "--set", "noisy_labels=/no/such/file.npy") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("natural-noise", tmp_path / "x", "--set", "stand_in=null") == 2
    assert "noisy_labels" in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()  # every check happens before any training


def run_cli_preset(exp_id: str, preset: str, out: Path) -> int:
    return main(["run", exp_id, "--preset", preset, "--out", str(out), "--no-progress"])


def test_natural_noise_label_sources(tmp_path):
    cfg = resolve_preset("natural-noise", "smoke")
    name, options = C_natural().label_source(cfg, tmp_path)
    labels = np.load(options["noisy_labels"])
    from varsmooth.data import load_dataset
    from varsmooth.data.corruption import corrupt_labels, parse_corruption, transition_matrix

    clean = load_dataset("digits").train.labels.numpy()
    expected, _ = corrupt_labels(clean, transition_matrix(parse_corruption(cfg["stand_in"]), 10), seed=0)
    assert name.startswith("stand-in") and np.array_equal(labels, expected)
    file = tmp_path / "labels.npy"
    np.save(file, expected)
    name, options = C_natural().label_source({**cfg, "noisy_labels": str(file)}, tmp_path)
    assert name == "file:labels.npy" and options["noisy_labels"] == str(file.resolve())
    with pytest.raises(InputError, match="noisy labels"):
        C_natural().label_source({**cfg, "stand_in": None}, tmp_path)


def C_natural():
    from varsmooth.experiments import natural_noise

    return natural_noise



def _same(cell: str, value) -> bool:
    try:
        return float(cell) == float(value)
    except (TypeError, ValueError):
        return str(cell) == str(value)


@pytest.mark.parametrize("exp_id", IDS)
def test_summary_states_its_claims_and_their_verdicts_recompute_from_results(smoke_outputs, exp_id):
    from varsmooth.experiments import claims as K

    root, _ = smoke_outputs
    summary = json.loads((root / exp_id / "summary.json").read_text())
    assert summary["claims"], exp_id
    for c in summary["claims"]:
        assert {"claim", "figure", "setting", "rule", "verdict", "numbers"} <= set(c)
        assert c["figure"].startswith("Fig. ") and c["verdict"] in {v.value for v in K.Verdict}
    rows = read_csv(root / exp_id / "results.csv")
    test_acc = [r for r in rows if r["metric"] == "test_acc"]
    for c in summary["claims"]:
        if "range" in c["numbers"]:  # spread_at_most over h0 >= h0_from
            grid = {}
            for r in test_acc:
                if all(_same(r[k], v) for k, v in c["numbers"]["rows"]["all"].items()):
                    if float(r["h0"]) >= c["numbers"]["h0_from"]:
                        grid.setdefault(float(r["h0"]), {})[int(r["seed"])] = float(r["value"])
            verdict, numbers = K.spread_at_most(grid, limit=c["numbers"]["limit"])
            assert verdict.value == c["verdict"] and numbers["range"] == pytest.approx(c["numbers"]["range"])
            continue
        side = {
            key: {int(r["seed"]): float(r["value"]) for r in test_acc
                  if all(_same(r[k], v) for k, v in c["numbers"]["rows"][key].items())}
            for key in ("a", "b")
        }  # fmt: skip
        assert all(len(s) == len(c["numbers"]["seeds"]) for s in side.values())
        rule = K.comparable if c["claim"].startswith("IVON is comparable") else K.outperforms
        verdict, numbers = rule(side["a"], side["b"], margin=0.01)
        assert verdict.value == c["verdict"] and numbers["diff_mean"] == pytest.approx(c["numbers"]["diff_mean"])


@pytest.mark.parametrize("exp_id", ["noisy-accuracy", "class-dependent"])
def test_reliability_diagram_reads_the_chosen_runs(smoke_outputs, exp_id):
    """The diagram's ECE (metrics.ece of the run's saved test probabilities) equals the run's recorded test_ece."""
    from varsmooth import metrics

    root, _ = smoke_outputs
    out = root / exp_id
    summary = json.loads((out / "summary.json").read_text())
    assert "reliability.png" in summary["figures"]
    for r in (json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))):
        if r["config"]["tags"]["method"] in ("erm", "ivon"):
            with np.load(out / "runs" / r["config"]["name"] / "arrays.npz") as a:
                assert metrics.ece(a["test_labels"], a["test_probs"]) == pytest.approx(r["metrics"]["test_ece"])
                if "test_probs_pred" in a:
                    got = metrics.ece(a["test_labels"], a["test_probs_pred"])
                    assert got == pytest.approx(r["metrics"]["test_pred_ece"])
