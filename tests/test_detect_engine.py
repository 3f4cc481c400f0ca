"""Label-error detection through the engine: planted flips on a tiny dataset, the callback, the CLI."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from varsmooth.commands import suspects as suspects_cmd
from varsmooth.data import LabeledData, LabeledSplit
from varsmooth.detect import EpochScorer, ScoreMethod, rank_suspects, score_checkpoint
from varsmooth.engine import TrainConfig, predict_split, train
from varsmooth.errors import InputError
from varsmooth.io import read_csv, read_json

N_FLIPS = 5


def _blobs(n=150):
    x, y = make_blobs(n_samples=n, centers=[[-3, 0], [3, 0], [0, 4]], cluster_std=0.8, random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    flips = np.random.default_rng(0).choice(n, N_FLIPS, replace=False)
    noisy = y.copy()
    noisy[flips] = (y[flips] + 1) % 3
    data = LabeledData(
        "blobs",
        LabeledSplit(torch.from_numpy(x), torch.from_numpy(noisy)),
        LabeledSplit(torch.from_numpy(x[:20]), torch.from_numpy(y[:20])),
        3,
        (2,),
        ["a", "b", "c"],
    )
    return data, flips


def _cfg(**kw):
    base = dict(dataset="blobs", model="mlp", method="ivon", epochs=15, batch_size=32, lr=0.2, progress=False,
                model_options={"hidden": [32]}, test_samples=2, save_train_predictions=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def blobs_run():
    data, flips = _blobs()
    scorer = EpochScorer(epochs=[5, 10, 15], samples=4)
    result = train(_cfg(), None, callbacks=[scorer], data=data)
    return data, flips, scorer, result


def test_planted_flips_rank_first(blobs_run):
    data, flips, scorer, _ = blobs_run
    n = len(data.train)
    assert scorer.accumulator.epochs == [5, 10, 15]
    for method in ScoreMethod:
        s = scorer.accumulator.scores(method)
        assert s.shape == (n,) and np.all(np.isfinite(s))  # every training example is scored
    acc = scorer.accumulator
    for s in (acc.scores("predictive"), acc.scores("margin"), scorer.step_scores()):
        assert set(rank_suspects(s)[:N_FLIPS]) == set(flips)
    np.testing.assert_array_equal(scorer.labels, data.train.labels.numpy())


def test_predict_split_matches_method_and_index(blobs_run):
    data, _, _, result = blobs_run
    x = data.train.features
    mean, pred = predict_split(result.method, x, np.array([3, 1]), samples=4, seed=7)
    np.testing.assert_allclose(mean, result.method.predict_proba(x[[3, 1]]).double().numpy(), atol=1e-6)
    again = predict_split(result.method, x, np.array([3, 1]), samples=4, seed=7)[1]
    np.testing.assert_array_equal(pred, again)  # seeded draws
    assert not np.allclose(pred, mean)  # IVON's predictive differs from its mean
    with pytest.raises(InputError, match="samples must be >= 1"):
        predict_split(result.method, x, samples=0)


def test_scorer_state_round_trips_through_a_checkpoint(blobs_run):
    _, _, scorer, _ = blobs_run
    buf = io.BytesIO()
    torch.save(scorer.state_dict(), buf)
    buf.seek(0)
    fresh = EpochScorer()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(fresh.step_scores(), scorer.step_scores())
    for m in ScoreMethod:
        np.testing.assert_array_equal(fresh.accumulator.scores(m), scorer.accumulator.scores(m))
    assert fresh.accumulator.epochs == scorer.accumulator.epochs


def test_erm_has_zero_noise():
    data, flips = _blobs()
    scorer = EpochScorer(epochs=[3], samples=2)
    train(_cfg(method="erm", lr=0.1, epochs=3), None, callbacks=[scorer], data=data)
    np.testing.assert_allclose(scorer.accumulator.scores("noise"), 0.0, atol=1e-12)
    np.testing.assert_allclose(scorer.accumulator.probs_mean, scorer.accumulator.probs_pred)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(dataset="digits", model="mlp", method="ivon", corruption="symmetric:0.1", train_subset=400,
                      epochs=8, batch_size=32, lr=0.2, progress=False, model_options={"hidden": [64]},
                      test_samples=2, save_train_predictions=False)  # fmt: skip
    train(cfg, out)
    return out


def _parse(argv):
    p = argparse.ArgumentParser()
    suspects_cmd.add_arguments(p)
    return p.parse_args(argv)


def test_noise_command_writes_ranked_csv_grid_and_summary(digits_run, tmp_path):
    out = tmp_path / "suspects"
    assert suspects_cmd.main(_parse([str(digits_run), "--out", str(out), "--samples", "4", "--top", "16"])) == 0
    rows = read_csv(out / "suspects.csv")
    arrays = np.load(digits_run / "arrays.npz")
    assert len(rows) == 400 and [int(r["rank"]) for r in rows] == list(range(1, 401))
    assert sorted(int(r["index"]) for r in rows) == sorted(arrays["pool_index"].tolist())
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert [float(r["predictive"]) for r in rows] == scores  # default method
    by_index = {int(r["index"]): r for r in rows}
    for pos, idx in enumerate(arrays["pool_index"]):  # given labels are the ones the run trained on
        assert int(by_index[int(idx)]["given_label"]) == int(arrays["labels"][pos])
    assert {"rank", "index", "given_label", "predicted_label", "score", "p_given", "noise", "label-noise",
            "margin", "true_label", "is_noisy"} <= set(rows[0])  # fmt: skip
    assert (out / "suspects.png").stat().st_size > 0
    summary = read_json(out / "summary.json")
    assert summary["n_flipped"] == int(arrays["flip_mask"].sum()) > 0
    assert summary["detection"]["predictive"]["auroc"] > 0.9  # the flips are found


def test_score_checkpoint_is_deterministic_and_methods_rerank(digits_run):
    a = score_checkpoint(digits_run, samples=3, seed=1)
    b = score_checkpoint(digits_run / "checkpoint.pt", samples=3, seed=1)
    for name in a.scores:
        np.testing.assert_array_equal(a.scores[name], b.scores[name])
    rows = suspects_cmd.suspect_rows(a, "noise")
    assert [r["score"] for r in rows] == sorted(a.scores["noise"], reverse=True)


def test_cli_errors(digits_run, tmp_path):
    from varsmooth.cli import main

    assert main(["suspects", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["suspects", str(digits_run), "--score", "bogus", "--out", str(tmp_path / "o")]) == 2
    both = ["--score", "noise", "--method", "noise"]
    assert main(["suspects", str(digits_run), *both, "--out", str(tmp_path / "o")]) == 2
    assert main(["suspects", str(digits_run), "--samples", "0", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()  # nothing half-written
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        score_checkpoint(tmp_path / "bad.pt")
    erm = tmp_path / "erm"
    train(TrainConfig(dataset="digits", model="logreg", method="erm", train_subset=50, epochs=1,
                      progress=False, save_train_predictions=False), erm)  # fmt: skip
    with pytest.raises(InputError, match="'erm' run; scoring needs an IVON run"):
        score_checkpoint(erm)


def test_method_is_the_deprecated_spelling_of_score(digits_run, tmp_path, capsys):
    from varsmooth.cli import main

    out = tmp_path / "a"
    argv = ["suspects", str(digits_run), "--method", "noise", "--top", "0", "--samples", "2", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "suspects --method is deprecated; use --score" in capsys.readouterr().err
    assert read_json(out / "summary.json")["score"] == "noise"
    rows = read_csv(out / "suspects.csv")
    assert [float(r["score"]) for r in rows] == [float(r["noise"]) for r in rows]
