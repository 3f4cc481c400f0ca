"""The user's own data for ``varsmooth suspects --data``: .npz, .npy pair, CSV and an image folder; bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from varsmooth.data.userdata import load_user_data
from varsmooth.errors import InputError


def test_npz_npy_and_csv_read_the_same_examples(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 2, 1, 2])
    np.savez(tmp_path / "a.npz", features=x, labels=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "a.csv").write_text("f0,kind,f2\n0,cat,2\n3,dog,5\n6,cat,8\n9,ant,11\n")
    for d in (load_user_data(tmp_path / "a.npz"), load_user_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")):
        np.testing.assert_array_equal(d.features, x)
        np.testing.assert_array_equal(d.labels, y)
        assert d.class_names == ["0", "1", "2"] and not d.is_image
    c = load_user_data(tmp_path / "a.csv", label_column="kind")
    np.testing.assert_array_equal(c.features, x[:, [0, 2]])
    assert c.class_names == ["ant", "cat", "dog"] and c.labels.tolist() == [1, 2, 1, 0]


def test_image_folder_reads_every_image_in_class_order(tmp_path):
    for cls, n in (("b", 3), ("a", 2)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = load_user_data(tmp_path / "imgs")
    assert d.is_image and d.class_names == ["a", "b"] and d.labels.tolist() == [0, 0, 1, 1, 1]
    assert len(d.features) == 5 and tuple(d.features[0].shape) == (3, 6, 6)
    assert d.files[2].endswith("b/0.png")


@pytest.mark.parametrize(
    "setup, kw, match",
    [
        (lambda p: np.savez(p / "f.npz", Z=np.zeros((2, 2))), {"path": "f.npz"}, "no array named X or features"),
        (lambda p: (p / "f.npz").write_text("junk"), {"path": "f.npz"}, "cannot read"),
        (lambda p: np.save(p / "f.npy", np.zeros((2, 2))), {"path": "f.npy"}, "--labels"),
        (lambda p: (p / "f.csv").write_text("a,label\n1,0\nx,1\n"), {"path": "f.csv"}, "line 3, column 'a'"),
        (lambda p: (p / "f.csv").write_text("a,b\n1,0\n"), {"path": "f.csv"}, "no label column 'label'"),
        (lambda p: np.savez(p / "f.npz", X=np.zeros((3, 2)), y=[0, 1]), {"path": "f.npz"}, "3 feature rows"),
        (lambda p: np.savez(p / "f.npz", X=np.zeros((2, 2)), y=[1, 1]), {"path": "f.npz"}, "only one class"),
        (lambda p: (p / "f.txt").write_text(""), {"path": "f.txt"}, "unsupported file type"),
    ],
)
def test_bad_files_raise_one_input_error(tmp_path, setup, kw, match):
    setup(tmp_path)
    with pytest.raises(InputError, match=match):
        load_user_data(tmp_path / kw["path"])
