"""IVON without tuning: the Hessian horizon (beta2 from the run length), ess chosen on the noisy validation split at
the end of training, and the posterior diagnostics with the warning when h has not moved."""

import importlib
import json
import math

import numpy as np
import pytest
import torch

from varsmooth.engine.ess_search import SEARCH_DIR, planned_cost, rung_epochs
from varsmooth.engine.evaluation import noise_summary
from varsmooth.engine.methods import hessian_warning
from varsmooth.engine.train import TrainConfig, resolve_config, train
from varsmooth.engine.trainconfig import HESSIAN_HORIZON, finalize_config, hessian_horizon_beta2
from varsmooth.errors import InputError
from varsmooth.experiments import resolve_preset
from varsmooth.experiments.comparison import comparison_configs
from varsmooth.io import read_json

BASE = dict(dataset="digits", model="mlp", method="ivon", corruption="symmetric:0.3", val_fraction=0.2, epochs=4,
            batch_size=64, test_samples=2, progress=False, device="cpu", seed=1, model_options={"hidden": [32]})


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


# ---------------------------------------------------------------------------------------------------------------
# beta2: the Hessian horizon


def test_beta2_horizon_from_run_length_and_explicit_value_wins():
    cfg = resolve_config(_cfg(ess_factor=1.0))
    assert cfg.beta2 is None  # unknown until the training-set size is
    done = finalize_config(cfg, n_train=1000)
    steps = cfg.schedule_epochs * math.ceil(1000 / cfg.batch_size)
    assert done.beta2 == pytest.approx(1 - HESSIAN_HORIZON / steps) and done.ess == 1000.0
    assert cfg.beta2 is None and cfg.ess is None  # the input is not changed
    assert math.exp(-HESSIAN_HORIZON) == pytest.approx(done.beta2**steps, rel=0.05)  # h0's weight at the end
    assert finalize_config(resolve_config(_cfg(beta2=0.999)), n_train=1000).beta2 == 0.999
    assert finalize_config(resolve_config(_cfg(method="ivon-fixed-h")), n_train=1000).beta2 == 1.0
    assert finalize_config(resolve_config(_cfg(method="erm")), n_train=1000).beta2 is None  # not an IVON run
    assert hessian_horizon_beta2(1) == 0.0 and hessian_horizon_beta2(4, 2.0) == 0.5
    with pytest.raises(InputError, match="training split is empty"):
        finalize_config(cfg, n_train=0)


@pytest.mark.parametrize("exp_id", ["noisy-accuracy", "fixed-hessian", "hessian-init"])
def test_paper_presets_keep_beta2_of_the_paper(exp_id):
    cfg = resolve_preset(exp_id, "paper", {"data_dir": "/nonexistent"})
    if exp_id == "noisy-accuracy":
        configs = comparison_configs(cfg, [(n, n, {}) for n in cfg["corruptions"]])[0]
    else:
        configs = importlib.import_module(f"varsmooth.experiments.{exp_id.replace('-', '_')}").build(cfg)
    ivon = [c for c in configs if c["train"]["method"] == "ivon"]
    assert ivon and all(c["train"]["beta2"] == 0.99999 for c in ivon)
    for c in ivon[:2]:  # the engine keeps the preset's explicit value
        assert finalize_config(resolve_config(TrainConfig.from_dict(c["train"])), 45000).beta2 == 0.99999


def test_run_records_resolved_beta2_and_resume_keeps_it(tmp_path):
    cfg = _cfg(ess_factor=1.0, epochs=2, schedule_epochs=4)
    first = train(cfg, tmp_path)
    saved = read_json(tmp_path / "config.json")["config"]
    assert saved["beta2"] == first.config.beta2 < 1 and saved["ess"] == first.config.ess
    steps = 4 * math.ceil(len(first.run.train_pos) / 64)
    assert saved["beta2"] == pytest.approx(1 - HESSIAN_HORIZON / steps)  # from the schedule, not from epochs=2
    resumed = train(_cfg(ess_factor=1.0, epochs=4, schedule_epochs=4), tmp_path)  # epochs grow: same beta2
    assert resumed.config.beta2 == saved["beta2"]
    assert resumed.optimizer.param_groups[0]["beta2"] == saved["beta2"]
    fresh = train(_cfg(ess_factor=1.0, epochs=4, schedule_epochs=4))
    for a, b in zip(resumed.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# diagnostics and the warning


def test_diagnostics_every_epoch_match_the_optimizer_state(tmp_path):
    result = train(_cfg(ess_factor=1.0, epochs=3), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2, 3]
    for h in lines:
        for key in ("h_ratio_q05", "h_ratio_median", "h_ratio_q95", "sigma_q05", "sigma_median", "sigma_q95",
                    "hess_init_weight", "train_noise_l1", "train_noise_l2", "train_noise_on_label"):  # fmt: skip
            assert key in h and math.isfinite(h[key]), key
        assert h["h_ratio_q05"] <= h["h_ratio_median"] <= h["h_ratio_q95"]
        assert h["train_noise_l1"] > 0  # IVON induces label noise on the training examples
    opt = result.optimizer
    group = opt.param_groups[0]
    h = torch.cat([opt.state[p]["hess"].reshape(-1) for p in group["params"]]).double()
    steps = max(int(opt.state[p]["step"]) for p in group["params"])
    last = lines[-1]
    assert last["h_ratio_median"] == pytest.approx(float(np.quantile((h / group["hess_init"]).numpy(), 0.5)))
    sigma = (group["ess"] * (h + group["weight_decay"])).rsqrt().numpy()
    assert last["sigma_q95"] == pytest.approx(float(np.quantile(sigma, 0.95)))
    assert last["hess_init_weight"] == pytest.approx(group["beta2"] ** steps)
    assert last["h_ratio_median"] < 0.9  # with the horizon, h has moved away from h0


def test_warning_when_h_has_not_moved(tmp_path, capsys):
    stuck = train(_cfg(ess_factor=1.0, epochs=2, beta2=0.99999), tmp_path / "stuck")
    err = capsys.readouterr().err
    assert err.count("varsmooth: warning: IVON's Hessian has not moved") == 1
    assert read_json(tmp_path / "stuck" / "final.json")["warnings"] == [hessian_warning(stuck.metrics)]
    assert stuck.metrics["h_ratio_median"] > 0.99  # it really did not move
    moved = train(_cfg(ess_factor=1.0, epochs=2), tmp_path / "moved")
    assert "warning" not in capsys.readouterr().err and "warnings" not in moved.metrics
    assert hessian_warning({"hess_init_weight": 0.9, "beta2": 1.0}) is None  # fixed h is not a failure


def test_noise_summary_against_a_loop():
    rng = np.random.default_rng(0)
    p_mean, p_pred = rng.dirichlet(np.ones(4), 50), rng.dirichlet(np.ones(4), 50)
    labels, mask = rng.integers(0, 4, 50), rng.random(50) < 0.3
    s = noise_summary(p_mean, p_pred, labels=labels, flip_mask=mask)
    eps = [p_mean[i] - p_pred[i] for i in range(50)]
    assert s["l1"] == pytest.approx(sum(sum(abs(e)) for e in eps) / 50, rel=1e-12)
    assert s["l2"] == pytest.approx(sum(math.sqrt(sum(e * e)) for e in eps) / 50, rel=1e-12)
    assert s["on_label"] == pytest.approx(sum(eps[i][labels[i]] for i in range(50)) / 50, rel=1e-12)
    noisy = [sum(abs(eps[i])) for i in range(50) if mask[i]]
    assert s["l1_noisy"] == pytest.approx(sum(noisy) / len(noisy), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# ess: auto


def test_rung_epochs_are_the_end_of_the_run():
    assert rung_epochs(40, 40, 3) == [40] and rung_epochs(40, 10, 3) == [10]  # stopped early: scored where it stops
    assert rung_epochs(40, 40, 1) == []  # one candidate: nothing to choose


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    return out, train(_cfg(ess_grid=[1.0, 0.25, 0.0625]), out)


def test_auto_is_the_default_with_a_validation_split_and_needs_one():
    assert resolve_config(_cfg()).ess == "auto"
    assert resolve_config(_cfg(ess_factor=0.5)).ess is None  # a factor given: no search
    assert resolve_config(_cfg(val_fraction=0.0)).ess is None
    with pytest.raises(InputError, match="validation split"):
        resolve_config(_cfg(ess="auto", val_fraction=0.0))


def test_auto_records_grid_scores_and_choice(auto_run):
    out, result = auto_run
    record = read_json(out / "config.json")["ess_search"]
    state = read_json(out / SEARCH_DIR / "search.json")  # the record plus what it was computed for
    assert {k: v for k, v in state.items() if k != "config"} == record and state["config"]["ess"] == "auto"
    assert record["grid"] == ["1", "0.25", "0.0625"] and record["score"] == "val_acc"  # the default ranking
    (rung,) = record["rungs"]
    assert rung["epochs"] == 4 and set(rung["scores"]) == {"1", "0.25", "0.0625"}  # every candidate, at the end
    ranked = sorted(rung["scores"], key=lambda f: (-rung["scores"][f]["val_acc"], rung["scores"][f]["val_pred_nll"]))
    assert rung["kept"] == ranked[:1] and f"{record['chosen_factor']:g}" == ranked[0]
    for f, scores in rung["scores"].items():  # each candidate's own run folder holds the scores recorded for it
        final = read_json(out / SEARCH_DIR / f"f{f}" / "final.json")
        assert {k: final[k] for k in scores} == scores and "test_acc" in scores
    n = len(result.run.train_pos)
    assert result.config.ess == record["chosen_factor"] * n == read_json(out / "config.json")["config"]["ess"]
    assert record["cost_epochs"] == 3 * 4 and record["cost_runs"] == 3 == result.metrics["ess_search_cost_runs"]


def test_auto_final_run_equals_a_fresh_run_at_the_chosen_ess(auto_run):
    out, result = auto_run
    record = read_json(out / "config.json")["ess_search"]
    fresh = train(_cfg(ess_factor=record["chosen_factor"]))
    for a, b in zip(result.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the winner's own training, finished in OUT, bit-exact
    assert result.metrics["test_acc"] == fresh.metrics["test_acc"]
    assert record["rungs"][0]["scores"][f"{record['chosen_factor']:g}"]["val_acc"] == fresh.metrics["val_acc"]


def test_auto_ranking_by_another_score_is_an_option(tmp_path):
    result = train(_cfg(ess_grid=[1.0, 0.0625], ess_score="val_pred_nll", epochs=2), tmp_path)
    (rung,) = read_json(tmp_path / "config.json")["ess_search"]["rungs"]
    best = min(rung["scores"], key=lambda f: (rung["scores"][f]["val_pred_nll"], -rung["scores"][f]["val_pred_acc"]))
    assert rung["kept"] == [best] and result.metrics["ess_factor_chosen"] == float(best)
    with pytest.raises(InputError, match="ess_score"):
        resolve_config(_cfg(ess_score="test_acc"))  # the test split never chooses


def test_auto_rerun_resumes_without_retraining(auto_run):
    out, result = auto_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")}
    again = train(_cfg(ess_grid=[1.0, 0.25, 0.0625]), out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")} == stamps
    assert again.metrics["test_acc"] == result.metrics["test_acc"]


def test_search_says_its_cost_and_shows_progress(tmp_path, capsys):
    """With progress on, ess auto states its cost in runs of training before it starts (equal to the recorded cost)
    and draws one bar over its trainings on stderr; with progress off it writes nothing there."""
    assert planned_cost(4, 4, 4) == ([4], [4], 16)  # every candidate to the end: 4 runs
    assert planned_cost(8, 4, 3) == ([4], [3], 12) and planned_cost(8, 8, 1) == ([], [], 8)
    result = train(_cfg(ess_grid=[1.0, 0.0625], epochs=2, progress=True), tmp_path / "on")
    err = capsys.readouterr().err
    cost = read_json(tmp_path / "on" / "config.json")["ess_search"]["cost_runs"]
    assert f"this costs 4 epochs, {cost:g} runs of training" in err and "ess auto" in err.split("costs")[1]
    assert result.metrics["ess_search_cost_runs"] == cost == 2
    train(_cfg(ess_grid=[1.0, 0.0625], epochs=2), tmp_path / "off")
    assert capsys.readouterr().err == ""
