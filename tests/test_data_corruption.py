"""Label corruption: transition matrices (Eq. 20-21 and Co-teaching conventions), seeded flips, corruption specs,
natural-noise label files and input validation."""

import io
import os
import pickle

import numpy as np
import pytest
import torch

from varsmooth.data import load_dataset
from varsmooth.data.corruption import (
    CorruptionKind,
    CorruptionSpec,
    corrupt_labels,
    corruption_summary,
    parse_corruption,
    read_noisy_label_file,
    transition_matrix,
)
from varsmooth.data.validation import check_same_length, validate_features, validate_labels
from varsmooth.errors import InputError

N = 60_000


def naive_matrix(kind, rate, k, beta=0.05):
    """The transition matrix written entry by entry from the definitions (i is 1-based in Eq. 20-21)."""
    p = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if kind == "symmetric":
                p[i, j] = 1 - rate if i == j else rate / (k - 1)
            elif kind == "pairflip":
                p[i, j] = 1 - rate if i == j else (rate if j == (i + 1) % k else 0.0)
            else:
                level = rate + beta * (i + 1)
                p[i, j] = 1 - level if i == j else level / (k - 1)
    return p


@pytest.mark.parametrize(
    "text,k",
    [
        ("symmetric:0.4", 10),
        ("symmetric:0.2", 100),
        ("symmetric:0.9", 2),
        ("pairflip:0.2", 10),
        ("pairflip:0.45", 3),
        ("class-dependent:0.3", 10),
        ("class-dependent:0.1:0.02", 20),
        ("class-dependent:0.5:0.05", 10),
    ],
)
def test_matrices_match_definitions_and_rows_sum_to_one(text, k):
    spec = parse_corruption(text)
    p = transition_matrix(spec, k)
    assert p.shape == (k, k)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p >= 0).all()
    np.testing.assert_allclose(p, naive_matrix(spec.kind.value, spec.rate, k, spec.beta), atol=1e-12)


def test_none_and_zero_rate_are_identity():
    np.testing.assert_array_equal(transition_matrix("none", 5), np.eye(5))
    np.testing.assert_array_equal(transition_matrix("symmetric:0", 5), np.eye(5))
    labels = np.arange(50) % 5
    noisy, mask = corrupt_labels(labels, transition_matrix("none", 5), seed=3)
    np.testing.assert_array_equal(noisy, labels)
    assert not mask.any()


def _binomial_check(labels, noisy, mask, flip_prob):
    """Realised flip count within 3 standard deviations of its expectation (sum of Bernoulli(flip_prob[n]))."""
    assert mask.dtype == bool and np.array_equal(mask, noisy != labels)
    expected = flip_prob.sum()
    sd = np.sqrt((flip_prob * (1 - flip_prob)).sum())
    assert abs(mask.sum() - expected) < 3 * sd, (mask.sum(), expected, sd)


@pytest.mark.parametrize("text", ["symmetric:0.4", "symmetric:0.2", "pairflip:0.2", "pairflip:0.45"])
def test_realised_rate_within_three_sd(text):
    k = 10
    labels = np.random.default_rng(0).integers(0, k, N)
    spec = parse_corruption(text)
    noisy, mask = corrupt_labels(labels, transition_matrix(spec, k), seed=1)
    assert noisy.dtype == np.int64 and noisy.shape == (N,)
    _binomial_check(labels, noisy, mask, np.full(N, spec.rate))
    summary = corruption_summary(labels, noisy, k)
    assert summary["n_flipped"] == mask.sum() and summary["rate"] == pytest.approx(mask.mean())


def test_class_dependent_rate_and_destinations():
    k, kappa, beta = 10, 0.2, 0.05
    labels = np.random.default_rng(2).integers(0, k, N)
    p = transition_matrix(f"class-dependent:{kappa}:{beta}", k)
    noisy, mask = corrupt_labels(labels, p, seed=5)
    _binomial_check(labels, noisy, mask, kappa + beta * (labels + 1.0))
    # every entry of the empirical matrix within 4 sd of P (multinomial counts per true class)
    counts = np.zeros((k, k))
    np.add.at(counts, (labels, noisy), 1)
    n_i = counts.sum(axis=1, keepdims=True)
    sd = np.sqrt(n_i * p * (1 - p))
    assert (np.abs(counts - n_i * p) <= 4 * sd + 1e-9).all()


def test_pairflip_moves_only_to_next_class():
    k = 10
    labels = np.random.default_rng(0).integers(0, k, N)
    noisy, mask = corrupt_labels(labels, transition_matrix("pairflip:0.3", k), seed=0)
    assert mask.any()
    np.testing.assert_array_equal(noisy[mask], (labels[mask] + 1) % k)
    assert set(labels[mask][noisy[mask] == 0]) == {9}  # truck -> airplane wraps around


def test_symmetric_flips_spread_over_all_other_classes():
    k = 10
    labels = np.random.default_rng(0).integers(0, k, N)
    noisy, mask = corrupt_labels(labels, transition_matrix("symmetric:0.5", k), seed=0)
    for c in range(k):
        dest = np.bincount(noisy[mask & (labels == c)], minlength=k)
        assert dest[c] == 0 and (dest[np.arange(k) != c] > 0).all()


def test_same_seed_same_flips_other_seed_differs():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    p = transition_matrix("symmetric:0.4", 10)
    a, ma = corrupt_labels(labels, p, seed=7)
    b, mb = corrupt_labels(labels.copy(), p, seed=7)
    c, _ = corrupt_labels(labels, p, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert (a != c).any()


@pytest.mark.parametrize(
    "text,k",
    [
        ("class-dependent:0.5:0.1", 10),  # kappa + beta K = 1.5
        ("class-dependent:0.3", 100),  # default beta 0.05: row 100 has rate 5.3
        ("class-dependent:0.0:-0.1", 5),  # negative flip rate -> diagonal > 1
    ],
)
def test_class_dependent_invalid_rows_rejected(text, k):
    with pytest.raises(InputError) as err:
        transition_matrix(text, k)
    msg = str(err.value)
    assert "\n" not in msg and "class" in msg and "[0, 1]" in msg


def test_parse_corruption_forms():
    assert parse_corruption("none") == CorruptionSpec()
    assert parse_corruption(None).kind is CorruptionKind.NONE
    assert parse_corruption("symmetric:0.4") == CorruptionSpec(CorruptionKind.SYMMETRIC, 0.4)
    assert parse_corruption("pairflip:0.2") == CorruptionSpec(CorruptionKind.PAIRFLIP, 0.2)
    assert parse_corruption("class-dependent:0.3") == CorruptionSpec(CorruptionKind.CLASS_DEPENDENT, 0.3, 0.05)
    assert parse_corruption("class-dependent:0.3:0.02") == CorruptionSpec("class-dependent", 0.3, 0.02)
    assert str(parse_corruption("class-dependent:0.3:0.02")) == "class-dependent:0.3:0.02"
    assert parse_corruption(str(parse_corruption("pairflip:0.45"))) == parse_corruption("pairflip:0.45")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("symmetric:1.0", "outside [0, 1)"),
        ("symmetric:1", "outside [0, 1)"),
        ("pairflip:-0.1", "outside [0, 1)"),
        ("class-dependent:1.2", "outside [0, 1)"),
        ("gaussian:0.2", "unknown corruption kind"),
        ("symmetric", "malformed"),
        ("symmetric:0.2:0.1", "malformed"),
        ("symmetric:abc", "not a number"),
        ("none:0.2", "malformed"),
    ],
)
def test_parse_corruption_rejects(text, needle):
    with pytest.raises(InputError) as err:
        parse_corruption(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_corrupt_labels_rejects_bad_input():
    with pytest.raises(InputError, match="out of range"):
        corrupt_labels(np.array([0, 1, 5]), np.eye(3), seed=0)
    with pytest.raises(InputError, match="sums to"):
        corrupt_labels(np.array([0, 1]), np.array([[0.5, 0.4], [0.0, 1.0]]), seed=0)
    with pytest.raises(InputError, match="square"):
        corrupt_labels(np.array([0, 1]), np.ones((2, 3)) / 3, seed=0)


def test_validation_helpers():
    np.testing.assert_array_equal(validate_labels(np.array([0.0, 2.0]), 3), [0, 2])
    with pytest.raises(InputError, match=r"labels\[1\] = 3 is out of range.*\[0, 2\]"):
        validate_labels(np.array([0, 3]), 3)
    with pytest.raises(InputError, match="out of range"):
        validate_labels(torch.tensor([-1, 0]), 3)
    with pytest.raises(InputError, match="non-integer"):
        validate_labels(np.array([0.5]), 3)
    with pytest.raises(InputError, match="1-D"):
        validate_labels(np.zeros((2, 2), dtype=int), 3)
    validate_features(np.ones((2, 3)))
    for bad in (np.nan, np.inf, -np.inf):
        x = torch.zeros(4, 2)
        x[2, 1] = bad
        with pytest.raises(InputError, match=r"features\[2, 1\].*finite"):
            validate_features(x)
    assert check_same_length(x=np.zeros(3), labels=[1, 2, 3]) == 3
    with pytest.raises(InputError, match="x has 3, labels has 2"):
        check_same_length(x=np.zeros(3), labels=[1, 2])


# ---- natural noise label files (CIFAR-10N / CIFAR-100N style) ----


def test_read_npy_csv_txt(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    np.save(tmp_path / "a.npy", labels)
    (tmp_path / "b.txt").write_text("\n".join(map(str, labels)) + "\n")
    (tmp_path / "c.csv").write_text("index,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    for name in ("a.npy", "b.txt", "c.csv"):
        got = read_noisy_label_file(tmp_path / name, len(labels), num_classes=10)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, labels)
    with pytest.raises(InputError, match="has 8 labels; the training split has 9"):
        read_noisy_label_file(tmp_path / "a.npy", 9)
    with pytest.raises(InputError, match="out of range"):
        read_noisy_label_file(tmp_path / "a.npy", 8, num_classes=5)
    (tmp_path / "bad.txt").write_text("1\n2\nx\n")
    with pytest.raises(InputError, match="line 3"):
        read_noisy_label_file(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_noisy_label_file(tmp_path / "missing.npy")


def test_read_cifarn_pt(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 10, 20)
    worse = (clean + (rng.random(20) < 0.4)) % 10
    torch.save({"clean_label": clean, "worse_label": worse, "aggre_label": clean}, tmp_path / "CIFAR-10_human.pt")
    np.testing.assert_array_equal(read_noisy_label_file(tmp_path / "CIFAR-10_human.pt", 20, key="worse_label"), worse)
    np.testing.assert_array_equal(read_noisy_label_file(tmp_path / "CIFAR-10_human.pt", 20), worse)  # default key
    with pytest.raises(InputError, match="no key 'noisy_label'.*clean_label"):
        read_noisy_label_file(tmp_path / "CIFAR-10_human.pt", 20, key="noisy_label")

    # a file written with numpy 1.x names its array helper numpy.core.multiarray._reconstruct
    buf = io.BytesIO()
    torch.save({"noisy_label": worse}, buf, _use_new_zipfile_serialization=False)
    old = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    (tmp_path / "old.pt").write_bytes(old)
    np.testing.assert_array_equal(read_noisy_label_file(tmp_path / "old.pt", 20), worse)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifarn_pt_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"worse_label": _Evil(marker)}, f, pickle_module=pickle)
    with pytest.raises(InputError) as err:
        read_noisy_label_file(tmp_path / "evil.pt")
    msg = str(err.value)
    assert "evil.pt" in msg and "system" in msg and "refusing to load" in msg and "\n" not in msg
    assert not marker.exists()


def test_load_dataset_with_noise_file(tmp_path):
    base = load_dataset("digits")
    n = len(base.train)
    noisy = (base.train.labels.numpy() + 1) % 10
    noisy[: n // 2] = base.train.labels.numpy()[: n // 2]
    np.save(tmp_path / "noisy.npy", noisy)
    data = load_dataset("digits", noise_file=tmp_path / "noisy.npy")
    np.testing.assert_array_equal(data.train.labels.numpy(), noisy)
    torch.testing.assert_close(data.train.clean_labels, base.train.labels)
    assert data.meta["natural_noise_rate"] == pytest.approx((n - n // 2) / n)
    np.save(tmp_path / "short.npy", noisy[:-1])
    with pytest.raises(InputError, match=f"has {n - 1} labels; the training split has {n}"):
        load_dataset("digits", noise_file=tmp_path / "short.npy")
