"""Verdict rules of the paper's claims: paired over seeds, with the spread, and 'not testable' below two seeds."""

import numpy as np
import pytest

from varsmooth.experiments.claims import MIN_SEEDS, Verdict, claim, comparable, outperforms, spread_at_most


def test_outperforms_is_paired_over_seeds_with_a_margin():
    ivon = {0: 0.95, 1: 0.93, 2: 0.96}
    ls = {0: 0.93, 1: 0.92, 2: 0.94, 3: 0.99}  # seed 3 has no IVON run: not paired
    verdict, n = outperforms(ivon, ls, margin=0.01)
    d = np.array([0.02, 0.01, 0.02])
    assert verdict is Verdict.AGREES and n["seeds"] == ["0", "1", "2"]
    assert n["diff_mean"] == pytest.approx(d.mean()) and n["diff_std"] == pytest.approx(d.std(ddof=1))
    assert n["a_mean"] == pytest.approx(np.mean(list(ivon.values()))) and n["b_mean"] == pytest.approx(0.93)
    assert outperforms(ivon, ls, margin=0.02)[0] is Verdict.DISAGREES  # 1.67 points < 2
    assert outperforms(ls, ivon)[0] is Verdict.DISAGREES


def test_too_few_seeds_is_not_testable():
    assert MIN_SEEDS == 2
    assert outperforms({0: 0.99}, {0: 0.5})[0] is Verdict.NOT_TESTABLE
    assert comparable({0: 0.5}, {1: 0.5})[0] is Verdict.NOT_TESTABLE  # no common seed
    assert spread_at_most({"a": {0: 0.5}, "b": {0: 0.6}}, limit=0.1)[0] is Verdict.NOT_TESTABLE


def test_comparable_and_spread():
    assert comparable({0: 0.90, 1: 0.91}, {0: 0.905, 1: 0.90}, margin=0.01)[0] is Verdict.AGREES
    assert comparable({0: 0.90, 1: 0.91}, {0: 0.80, 1: 0.80}, margin=0.01)[0] is Verdict.DISAGREES
    v, n = spread_at_most({0.05: {0: 0.80, 1: 0.82}, 0.5: {0: 0.86, 1: 0.88}, 2.0: {0: 0.9, 1: 0.9}}, limit=0.1)
    assert v is Verdict.AGREES and n["range"] == pytest.approx(0.09)
    assert spread_at_most({0.05: {0: 0.7, 1: 0.7}, 2.0: {0: 0.9, 1: 0.9}}, limit=0.1)[0] is Verdict.DISAGREES


def test_claim_record_is_plain_data():
    rec = claim("IVON beats LS", "Fig. 5", "symmetric:0.5", "IVON - best LS >= 1 point", outperforms(
        {0: 0.9, 1: 0.9}, {0: 0.8, 1: 0.85}))  # fmt: skip
    assert rec["verdict"] == "agrees" and rec["figure"] == "Fig. 5" and rec["numbers"]["diff_mean"] > 0
    assert set(rec) == {"claim", "figure", "setting", "rule", "verdict", "numbers"}
