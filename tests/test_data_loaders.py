"""Loaders on small files written here in the real formats: IDX (plain and gzip), CIFAR python batches (pickle
protocol 2, bytes keys), a tiny Clothing1M layout, an image folder; corrupt inputs give one-line InputErrors."""

import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from varsmooth.data import DATASETS, load_dataset, read_idx, verify_md5
from varsmooth.data.safe_pickle import restricted_load
from varsmooth.data.transforms import NORMALIZATION
from varsmooth.errors import InputError


def one_line_error(fn, *needles):
    with pytest.raises(InputError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# ---------------------------------------------------------------- IDX


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(dt).tobytes()


def write_idx_folder(folder, *, gz: bool, n_train=12, n_test=5, hw=(5, 6), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads(tmp_path, gz):
    arrays = write_idx_folder(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path)
    mean, std = NORMALIZATION["mnist"]
    assert data.input_shape == (1, 5, 6) and data.num_classes == 10 and data.augment is None
    assert data.train.features.shape == (12, 1, 5, 6) and data.train.features.dtype == torch.float32
    expected = (arrays["train-images-idx3-ubyte"][:, None] / 255.0 - mean[0]) / std[0]
    np.testing.assert_allclose(data.train.features.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(data.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.train.labels.dtype == torch.int64 and len(data.test) == 5


def test_idx_subfolder_and_class_names(tmp_path):
    write_idx_folder(tmp_path / "fashion-mnist", gz=True)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    mean, _ = NORMALIZATION["fashion-mnist"]
    assert data.normalization[0] == mean


def test_read_idx_types_and_byte_order(tmp_path):
    arr = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    (tmp_path / "a").write_bytes(idx_bytes(arr, 0x0B))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    f = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 2, 2)
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx_bytes(f, 0x0D)))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), f)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_file_names_the_file(tmp_path, gz):
    write_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()[:-7]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    one_line_error(lambda: load_dataset("mnist", tmp_path), str(path), "truncated")


def test_idx_truncated_gzip_stream(tmp_path):
    write_idx_folder(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    one_line_error(lambda: load_dataset("mnist", tmp_path), str(path), "truncated")


def test_idx_wrong_magic_trailing_bytes_and_header(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x08\x01\x00\x00" + good[4:])  # byte-swapped magic
    one_line_error(lambda: load_dataset("mnist", tmp_path), str(path), "magic number 0x08010000")
    path.write_bytes(bytes([0, 0, 0x07, 1]) + good[4:])  # unknown type code
    one_line_error(lambda: load_dataset("mnist", tmp_path), "magic number 0x00000701")
    path.write_bytes(good + b"\x00")
    one_line_error(lambda: load_dataset("mnist", tmp_path), str(path), "longer than its header")
    path.write_bytes(good[:6])
    one_line_error(lambda: read_idx(path), "truncated inside its header")


def test_idx_count_mismatch_and_bad_labels(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    one_line_error(lambda: load_dataset("mnist", tmp_path), "length mismatch", "t10k-images-idx3-ubyte has 5")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8)))
    one_line_error(lambda: load_dataset("mnist", tmp_path), "= 10 is out of range", "[0, 9]")


def test_idx_missing_dir_and_files(tmp_path):
    one_line_error(lambda: load_dataset("mnist", tmp_path / "nope"), str(tmp_path / "nope"), "does not exist")
    one_line_error(lambda: load_dataset("mnist"), "no data directory")
    write_idx_folder(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    one_line_error(lambda: load_dataset("kmnist", tmp_path), "t10k-images-idx3-ubyte.gz", str(tmp_path))


def test_md5_verification(tmp_path):
    write_idx_folder(tmp_path, gz=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    sums = {n: hashlib.md5((tmp_path / n).read_bytes()).hexdigest() for n in names}
    verify_md5(tmp_path / names[0], sums[names[0]].upper())
    one_line_error(lambda: verify_md5(tmp_path / names[0], "0" * 32), "checksum mismatch", names[0])
    (tmp_path / "MD5SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    assert len(load_dataset("mnist", tmp_path).train) == 12
    sums[names[1]] = "f" * 32
    (tmp_path / "MD5SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    one_line_error(lambda: load_dataset("mnist", tmp_path), "checksum mismatch", names[1])
    assert len(load_dataset("mnist", tmp_path, verify=False).train) == 12


# ---------------------------------------------------------------- CIFAR


def dump2(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(folder, n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n_per_batch)]}  # fmt: skip
        dump2(batch, folder / name)
        batches[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump2({b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}, folder / "batches.meta")
    return batches


def test_cifar10_batches_load(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (3, 32, 32) and data.augment == "cifar" and data.num_classes == 10
    assert data.train.features.shape == (20, 3, 32, 32) and len(data.test) == 4
    assert data.class_names[-1] == "truck"
    raw, labels = batches["data_batch_2"]  # rows 4..7 of the training set
    mean, std = NORMALIZATION["cifar10"]
    i, c, h, w = 1, 2, 5, 30  # the CIFAR row layout: 1024 values per channel, row-major 32 x 32
    expected = (raw[i, c * 1024 + h * 32 + w] / 255.0 - mean[c]) / std[c]
    assert data.train.features[4 + i, c, h, w].item() == pytest.approx(expected, abs=1e-6)
    np.testing.assert_array_equal(data.train.labels[4:8].numpy(), labels)
    np.testing.assert_array_equal(data.test.labels.numpy(), batches["test_batch"][1])


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 3)):
        dump2({b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
               b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
               b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)]}, tmp_path / split)  # fmt: skip
    dump2({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
           b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, tmp_path / "meta")  # fmt: skip
    fine = load_dataset("cifar100", tmp_path)
    coarse = load_dataset("cifar100", tmp_path, label_mode="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20 and coarse.class_names[3] == "c3"
    assert len(fine.train) == 6 and fine.augment == "cifar"
    one_line_error(lambda: load_dataset("cifar100", tmp_path, label_mode="medium"), "label_mode", "fine, coarse")


def test_cifar_numpy1_names_and_str_keys(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "test_batch"
    data = np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({"data": data, "labels": [3, 4]}, protocol=2)
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    d = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(d.test.labels.numpy(), [3, 4])


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_cifar_pickle_with_callable_is_refused(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump2({b"data": _Evil(f"touch {marker}"), b"labels": [1]}, tmp_path / "data_batch_3")
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "data_batch_3", "references a callable", "system",
                   "refusing to load")  # fmt: skip
    assert not marker.exists()


def test_restricted_unpickler_reads_python2_cpickle():
    # what Python 2's cPickle.dumps({'data': uint8 array [[1, 2]], 'labels': [1], 'batch_label': 'test'}, 2) writes,
    # as in the original CIFAR files: str as SHORT_BINSTRING, numpy under numpy.core.multiarray
    raw = (
        b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85"
        b"U\x01b\x87Rq\x05(K\x01K\x01K\x02\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNN"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x01\x02tbU\x06labelsq\x08]q\tK\x01aU\x0bbatch_labelq\n"
        b"U\x04testq\x0bu."
    )
    got = restricted_load(raw)
    assert set(got) == {b"data", b"labels", b"batch_label"} and got[b"batch_label"] == b"test"
    np.testing.assert_array_equal(got[b"data"], np.array([[1, 2]], dtype=np.uint8))
    assert got[b"data"].dtype == np.uint8 and got[b"labels"] == [1]


def test_restricted_unpickler_limits_codecs_encode():
    import codecs

    class Rot:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    one_line_error(lambda: restricted_load(pickle.dumps(Rot(), protocol=2), source="x"), "not a valid pickle")
    assert restricted_load(pickle.dumps({b"k": b"\x00\xff", b"e": b""}, protocol=2)) == {b"k": b"\x00\xff", b"e": b""}


def test_cifar_truncated_wrong_shape_and_missing(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_1"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "data_batch_1", "truncated")
    dump2({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, path)
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "data_batch_1", "expected uint8 (N, 3072)")
    dump2({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, path)
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "length mismatch")
    dump2([1, 2, 3], path)
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "a CIFAR batch is a dict")
    path.unlink()
    one_line_error(lambda: load_dataset("cifar10", tmp_path), "data_batch_1", str(tmp_path))


# ---------------------------------------------------------------- Clothing1M and image folders


def solid(path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def write_clothing1m(root, ann=None):
    ann = ann or root
    ann.mkdir(parents=True, exist_ok=True)
    colors = {}
    rows_noisy, rows_clean, train_keys, test_keys = [], [], [], []
    for i in range(6):
        key = f"images/{i % 2}/{i:02d}/{i}.jpg"
        colors[key] = (40 * i, 255 - 30 * i, 7 * i)
        solid(root / key, (40, 30), colors[key])
        rows_noisy.append(f"{key} {i % 3}")
        (train_keys if i < 4 else test_keys).append(key)
        if i >= 2:
            rows_clean.append(f"{key} {(i + 1) % 3}")
    (ann / "category_names_eng.txt").write_text("T-Shirt\nShirt\nKnitwear\n")
    (ann / "noisy_label_kv.txt").write_text("\n".join(rows_noisy) + "\n")
    (ann / "clean_label_kv.txt").write_text("\n".join(rows_clean) + "\n")
    (ann / "noisy_train_key_list.txt").write_text("\n".join(train_keys) + "\n")
    (ann / "clean_test_key_list.txt").write_text("\n".join(test_keys) + "\n")
    return colors, train_keys, test_keys


@pytest.mark.parametrize("annotations", [False, True])
def test_clothing1m_layout(tmp_path, annotations):
    colors, train_keys, test_keys = write_clothing1m(tmp_path, tmp_path / "annotations" if annotations else None)
    data = load_dataset("clothing1m", tmp_path, size=16, resize=20)
    assert data.num_classes == 3 and data.class_names == ["T-Shirt", "Shirt", "Knitwear"]
    assert data.input_shape == (3, 16, 16) and data.train.is_lazy and len(data.train) == 4
    np.testing.assert_array_equal(data.train.labels.numpy(), [0, 1, 2, 0])  # noisy labels i % 3
    np.testing.assert_array_equal(data.test.labels.numpy(), [2, 0])  # clean labels (i + 1) % 3
    mean, std = NORMALIZATION["imagenet"]
    x = data.train.features[2]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = (torch.tensor(colors[train_keys[2]]) / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    # JPEG is lossy: a solid colour comes back within a couple of grey levels
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected.float(), atol=3 / 255 / 0.22, rtol=0)


def test_clothing1m_errors(tmp_path):
    one_line_error(lambda: load_dataset("clothing1m", tmp_path / "x"), "does not exist", "noisy_label_kv.txt")
    write_clothing1m(tmp_path)
    (tmp_path / "clean_test_key_list.txt").unlink()
    one_line_error(lambda: load_dataset("clothing1m", tmp_path), "clean_test_key_list.txt", "missing")
    write_clothing1m(tmp_path)
    with open(tmp_path / "clean_test_key_list.txt", "a") as f:
        f.write("images/9/99/unknown.jpg\n")
    one_line_error(lambda: load_dataset("clothing1m", tmp_path), "no label in clean_label_kv.txt", "unknown.jpg")
    write_clothing1m(tmp_path)
    (tmp_path / "noisy_label_kv.txt").write_text("images/0/00/0.jpg seven\n")
    one_line_error(lambda: load_dataset("clothing1m", tmp_path), "noisy_label_kv.txt' line 1")
    one_line_error(lambda: load_dataset("clothing1m", tmp_path, train_list="dirty"), "train_list", "noisy, clean")


def test_imagefolder_split_and_pixels(tmp_path):
    for c, name in enumerate(["dog", "cat", "bird"]):
        for j in range(5):
            solid(tmp_path / name / f"{j}.png", (7, 6), (10 * c, 20 * j, 100))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", tmp_path, test_fraction=0.4, seed=1)
    assert data.class_names == ["bird", "cat", "dog"] and data.input_shape == (3, 6, 7)
    assert len(data.train) == 9 and len(data.test) == 6
    assert np.bincount(data.test.labels.numpy()).tolist() == [2, 2, 2]  # stratified
    again = load_dataset("imagefolder", tmp_path, test_fraction=0.4, seed=1)
    assert again.test.features.paths == data.test.features.paths
    path = data.train.features.paths[0]
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[0, 0] / 255.0
    mean, std = NORMALIZATION["imagenet"]
    expected = torch.tensor((rgb - np.array(mean)) / np.array(std), dtype=torch.float32)
    torch.testing.assert_close(data.train.features[0][:, 3, 3], expected)
    gray = load_dataset("imagefolder", tmp_path, mode="L", size=4)
    assert gray.input_shape == (1, 4, 4) and gray.train.features[0].shape == (1, 4, 4)


def test_imagefolder_train_test_layout_and_errors(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for j in range(n):
                solid(tmp_path / split / name / f"{j}.jpg", (8, 8), (0, 0, 0))
    data = load_dataset("imagefolder", tmp_path)
    assert (len(data.train), len(data.test), data.num_classes) == (6, 4, 2)
    solid(tmp_path / "test" / "zebra" / "0.png", (8, 8), (0, 0, 0))
    one_line_error(lambda: load_dataset("imagefolder", tmp_path), "zebra", "no training folder")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("imagefolder", tmp_path / "empty"), "no images found")
    bad = tmp_path / "broken"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "0.png").write_bytes(b"\x89PNG not really")
    (bad / "x" / "1.png").write_bytes(b"\x89PNG not really")
    one_line_error(lambda: load_dataset("imagefolder", bad), "cannot read image", str(bad / "x"))


# ---------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert DATASETS == ("moons", "digits", "mnist-subset", "mnist", "fashion-mnist", "kmnist", "cifar10",
                        "cifar100", "clothing1m", "imagefolder")  # fmt: skip
    one_line_error(lambda: load_dataset("imagenet"), "unknown dataset 'imagenet'", "mnist-subset")
    one_line_error(lambda: load_dataset("moons", bogus=1), "unknown option(s) bogus", "noise_file")
    one_line_error(lambda: load_dataset("moons", noise_key="worse_label"), "noise_key was given without noise_file")
