"""cleanlab-compatible label-issue functions (varsmooth.detect.api): cleanlab as the oracle, planted flips on digits,
and the ``varsmooth suspects --data`` path against the Python API."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.count import compute_confident_joint
from cleanlab.count import num_label_issues as cl_num_label_issues
from cleanlab.filter import find_label_issues as cl_find_label_issues
from cleanlab.rank import get_label_quality_scores

from varsmooth.cli import build_parser
from varsmooth.commands import suspects as suspects_cmd
from varsmooth.data import corrupt_labels, load_dataset, transition_matrix
from varsmooth.detect import (
    as_labeled_data,
    confident_joint,
    find_label_issues,
    fit_probs,
    label_quality_scores,
    num_label_issues,
    rank_suspects,
)
from varsmooth.errors import InputError
from varsmooth.io import read_csv


def _random_probs(rng, n, k):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.5, 4)
    logits[np.arange(n), y] += rng.uniform(0, 3)
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_confident_joint_count_and_quality_match_cleanlab():
    rng = np.random.default_rng(0)
    for _ in range(40):
        y, p = _random_probs(rng, int(rng.integers(20, 300)), int(rng.integers(2, 8)))
        for calibrate in (True, False):
            np.testing.assert_array_equal(confident_joint(y, p, calibrate=calibrate),
                                          compute_confident_joint(y, p, calibrate=calibrate))  # fmt: skip
        assert num_label_issues(y, p) == cl_num_label_issues(y, p, estimation_method="off_diagonal_calibrated")
        for method in ("self_confidence", "normalized_margin"):
            np.testing.assert_allclose(label_quality_scores(y, p, method=method),
                                       get_label_quality_scores(y, p, method=method))  # fmt: skip


def test_mask_and_ranked_indices_agree():
    y, p = _random_probs(np.random.default_rng(1), 200, 4)
    mask = find_label_issues(y, p)
    assert mask.dtype == bool and mask.shape == (200,) and mask.sum() == num_label_issues(y, p)
    quality = label_quality_scores(y, p)
    assert quality[mask].max() <= quality[~mask].min()  # the lowest-quality examples are flagged
    ranked = find_label_issues(y, p, return_indices_ranked_by="self_confidence")
    assert sorted(ranked.tolist()) == np.flatnonzero(mask).tolist()
    assert np.all(np.diff(p[ranked, y[ranked]]) >= 0)  # least self-confident first
    np.testing.assert_array_equal(find_label_issues(y, p, filter_by="predicted_neq_given"), p.argmax(1) != y)
    np.testing.assert_array_equal(find_label_issues(y, p, filter_by="threshold", threshold=0.3), quality < 0.3)
    # the same call shape as cleanlab's: a mask of the same length, mostly the same examples
    theirs = cl_find_label_issues(y, p, n_jobs=1)
    assert theirs.shape == mask.shape and (mask & theirs).sum() >= 0.5 * theirs.sum()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(pred_probs=None), "give pred_probs"),
        (dict(pred_probs=np.full((3, 2), 0.5), features=np.zeros((3, 2))), "not both"),
        (dict(pred_probs=np.full((4, 2), 0.5)), "shape"),
        (dict(pred_probs=np.array([[0.5, 0.5], [0.9, 0.3], [0.5, 0.5]])), "sum to 1"),
        (dict(pred_probs=np.array([[1.0, 0.0, 0.0]] * 3)[:, :1]), "K >= 2"),
        (dict(pred_probs=np.full((3, 2), 0.5), filter_by="prune"), "unknown filter_by"),
        (dict(pred_probs=np.full((3, 2), 0.5), rank_by="entropy"), "unknown quality method"),
        (dict(pred_probs=np.full((3, 2), 0.5), threshold=0.0), "threshold"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(InputError, match=match):
        find_label_issues(np.array([0, 1, 1]), **kw)


@pytest.mark.parametrize("labels", [[0.0, 1.0, np.inf], [0.0, 1.0, np.nan], [0.0, 1.5, 1.0]])
def test_non_integer_labels_are_refused(labels):
    """One label check for every detector entry point: inf, NaN and fractions are refused, not cast to int64."""
    for call in (lambda: find_label_issues(np.array(labels), np.full((3, 2), 0.5)),
                 lambda: label_quality_scores(np.array(labels), np.full((3, 2), 0.5)),
                 lambda: as_labeled_data(np.zeros((3, 2)), np.array(labels))):  # fmt: skip
        with pytest.raises(InputError, match="labels must be integers"):
            call()


def test_labels_out_of_range_for_the_count():
    with pytest.raises(InputError, match="out of range"):
        confident_joint(np.array([0, 1, 2]), np.full((3, 2), 0.5))


@pytest.fixture(scope="module")
def digits_flips():
    data = load_dataset("digits")
    x, clean = data.train.features.numpy(), data.train.labels.numpy()
    noisy, _ = corrupt_labels(clean, transition_matrix("symmetric:0.2", 10), seed=0)
    return x, clean, noisy


def test_digits_planted_flips_found_with_precision_and_recall(digits_flips):
    x, clean, noisy = digits_flips
    flipped = noisy != clean
    mask = find_label_issues(noisy, features=x, seed=0)
    hit = (mask & flipped).sum()
    precision, recall = hit / mask.sum(), hit / flipped.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_npz_cli_ranks_as_the_python_api(digits_flips, tmp_path, capsys):
    x, _, noisy = digits_flips
    np.savez(tmp_path / "d.npz", X=x, y=noisy)
    quality = label_quality_scores(noisy, features=x, seed=0)
    args = build_parser("suspects").parse_args(["suspects", "--data", str(tmp_path / "d.npz"), "--out",
                                                str(tmp_path / "out"), "--seed", "0"])  # fmt: skip
    assert suspects_cmd.main(args) == 0
    rows = read_csv(tmp_path / "out" / "suspects.csv")
    assert [int(r["index"]) for r in rows] == rank_suspects(-quality).tolist()
    np.testing.assert_allclose([float(r["quality"]) for r in rows], np.sort(quality), rtol=1e-12)
    assert {int(r["given_label"]) for r in rows[:5]} <= set(range(10))
    assert sum(int(r["flagged"]) for r in rows) == find_label_issues(noisy, features=x, seed=0).sum()
    out = capsys.readouterr()
    assert "flagged as label issues" in out.out and "training one IVON run" in out.err
    assert (tmp_path / "out" / "report.md").read_text().startswith("## Label issues")


def test_fit_probs_are_probabilities(digits_flips):
    x, _, noisy = digits_flips
    fit = fit_probs(noisy[:200], x[:200], epochs=1, method="erm")
    for p in (fit.step_probs, fit.pred_probs):
        assert p.shape == (200, 10) and np.allclose(p.sum(1), 1.0)


@pytest.mark.parametrize("extra, match", [([], "exactly one"), (["--data", "missing.npz"], "does not exist")])
def test_cli_bad_data_writes_nothing(tmp_path, extra, match):
    args = build_parser("suspects").parse_args(["suspects", *extra, "--out", str(tmp_path / "o")])
    with pytest.raises(InputError, match=match):
        suspects_cmd.main(args)
    assert not (tmp_path / "o").exists()



def test_own_torch_model_is_trained_as_a_copy(digits_flips):
    import torch
    from torch import nn

    x, _, noisy = digits_flips
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    before = [p.detach().clone() for p in net.parameters()]
    fit = fit_probs(noisy[:300], x[:300], model=net, epochs=2)
    assert fit.step_probs.shape == (300, 10) and np.allclose(fit.step_probs.sum(1), 1.0)
    trained = [p for p in fit.result.model.parameters()]
    assert [tuple(p.shape) for p in trained] == [tuple(p.shape) for p in before]
    assert not torch.equal(trained[0].cpu(), before[0])  # the copy was trained
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))  # user's module unchanged
    assert find_label_issues(noisy[:300], features=x[:300], model=net, epochs=2).shape == (300,)


@pytest.mark.parametrize("ess", ["auto", "16N"])
def test_cli_ess_scores_every_example(digits_flips, tmp_path, ess):
    from varsmooth.io import read_json

    x, _, noisy = digits_flips
    np.savez(tmp_path / "d.npz", features=x[:300], labels=noisy[:300])
    args = build_parser("suspects").parse_args(["suspects", "--data", str(tmp_path / "d.npz"), "--ess", ess,
                                                "--epochs", "2", "--out", str(tmp_path / "o")])  # fmt: skip
    assert suspects_cmd.main(args) == 0
    rows = read_csv(tmp_path / "o" / "suspects.csv")
    assert sorted(int(r["index"]) for r in rows) == list(range(300))  # validation examples are scored too
    cfg = read_json(tmp_path / "o" / "summary.json")["config"]
    if ess == "auto":
        assert cfg["val_fraction"] == 0.1 and isinstance(cfg["ess"], float)
    else:
        assert cfg["val_fraction"] == 0.0 and cfg["ess"] == 16 * 300


def test_cli_image_folder_writes_the_grid(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    args = build_parser("suspects").parse_args(["suspects", "--data", str(tmp_path / "imgs"), "--epochs", "1",
                                                "--top", "4", "--out", str(tmp_path / "o")])  # fmt: skip
    assert suspects_cmd.main(args) == 0
    rows = read_csv(tmp_path / "o" / "suspects.csv")
    assert len(rows) == 12 and {r["given_name"] for r in rows} == {"cat", "dog"}
    assert all(r["file"].endswith(".png") for r in rows)
    assert (tmp_path / "o" / "suspects.png").stat().st_size > 0
