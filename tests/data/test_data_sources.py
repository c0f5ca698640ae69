"""vglab.data.sources: digits, the IDX and CIFAR readers, bad input, lookup order, info."""

import gzip
import hashlib

import numpy as np
import pytest
from synth import cifar_records, files_under, idx, write_tree

from vglab.data import DATASETS, DataError, info, load
from vglab.data.sources import locate, read_cifar_batch, read_idx

# ----------------------------------------------------------------------------- digits


def test_digits_split_shapes_range_and_stratification():
    ds = load("digits")
    assert ds.x_train.shape == (1437, 8, 8) and ds.x_test.shape == (360, 8, 8)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.pixel_max == 16 and ds.x_train.max() == 16 and ds.x_train.min() == 0
    assert ds.n_classes == 10 and set(ds.y_test) == set(range(10))
    # Stratified: each class is 20 % of its count in the test split, up to rounding.
    counts = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - 0.2 * counts) <= 1)
    assert load("digits") is ds  # cached in the process


def test_digits_split_is_cached_so_workers_skip_scikit_learn(tmp_path, monkeypatch):
    """The first load splits digits with scikit-learn and caches the split; a new process
    loads the same arrays without importing scikit-learn; a damaged cache is a miss (split
    again, with a warning, and stored again). The first and the damaged loads run in this
    process (`_load_digits` past its in-memory cache, counting the splits): only the load
    that must not import scikit-learn needs a fresh process."""
    import os
    import subprocess
    import sys

    from vglab.data import sources

    def digest(arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    monkeypatch.setenv("VGLAB_CACHE", str(tmp_path))
    splits = []
    split = sources._split_digits
    monkeypatch.setattr(sources, "_split_digits", lambda: splits.append(1) or split())

    def here():
        d = sources._load_digits.__wrapped__()
        return digest((d.x_train, d.y_train, d.x_test, d.y_test))

    first = here()
    assert splits == [1]
    [cached] = (tmp_path / "digits").glob("split-*.npz")
    code = ("import sys, hashlib; from vglab.data import load; d = load('digits'); "
            "h = hashlib.sha256(); [h.update(a.tobytes()) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]; "
            "print('sklearn' in sys.modules, h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "VGLAB_CACHE": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", first]
    cached.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="ignoring unreadable digits cache"):
        third = here()
    assert splits == [1, 1] and third == first
    with np.load(cached) as f:  # stored again
        assert digest(f[k] for k in sources.DIGITS_SPLIT) == first


def test_loaded_arrays_are_read_only():
    with pytest.raises(ValueError):
        load("digits").x_train[0, 0, 0] = 1


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="digits, mnist, cifar10"):
        load("imagenet")


# ----------------------------------------------------------------------------- IDX reader


def test_read_idx_plain_and_gz(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx(array)))
    md5 = "md5:" + hashlib.md5(idx(array)).hexdigest()
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", md5), array)


GOOD_IDX = idx(np.zeros((3, 2, 2), np.uint8))


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x09\x03" + GOOD_IDX[4:], "not an IDX file"),  # magic says int8... not uint8
    (b"\x08\x03\x00\x00" + GOOD_IDX[4:], "not an IDX file"),
    (b"", "not an IDX file"),
    (GOOD_IDX[:-1], "truncated or corrupt"),
    (GOOD_IDX + b"\x00", "truncated or corrupt"),
    (GOOD_IDX[:8], "truncated IDX header"),
    (GOOD_IDX[:4] + b"\x00\x00\x00\x07" + GOOD_IDX[8:], "truncated or corrupt"),  # wrong size in header
])
def test_read_idx_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert "bad-idx3-ubyte.gz" in str(e.value) and "vglab data fetch mnist" in str(e.value)


def test_read_idx_rejects_truncated_gzip_and_checksum_mismatch(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD_IDX)[:-6])
    with pytest.raises(DataError, match="not a complete gzip file"):
        read_idx(path)
    path.write_bytes(gzip.compress(GOOD_IDX))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_idx(path, "md5:" + "0" * 32)


# ----------------------------------------------------------------------------- CIFAR reader


def test_read_cifar_batch_converts_chw_planes_to_hwc(tmp_path):
    rng = np.random.default_rng(1)
    raw = cifar_records(np.array([3, 7]), rng)
    (tmp_path / "b.bin").write_bytes(raw)
    images, labels = read_cifar_batch(tmp_path / "b.bin", n_records=2)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [3, 7] and labels.dtype == np.int64
    record = np.frombuffer(raw, np.uint8)[3073:]  # the second record
    for h, w, c in [(0, 0, 0), (5, 17, 1), (31, 31, 2)]:
        assert images[1, h, w, c] == record[1 + c * 1024 + h * 32 + w]


@pytest.mark.parametrize("size_change, n_records, message", [
    (-1, None, "not a whole number of 3073-byte"),  # truncated mid-record
    (+5, None, "not a whole number of 3073-byte"),
    (-3073, 2, "holds 1 records, expected 2"),  # a whole record missing
    (-2 * 3073, None, "not a whole number"),  # empty
])
def test_read_cifar_batch_rejects_bad_lengths(tmp_path, size_change, n_records, message):
    raw = cifar_records(np.array([0, 1]), np.random.default_rng(0))
    raw = raw[:len(raw) + size_change] if size_change < 0 else raw + bytes(size_change)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as e:
        read_cifar_batch(path, n_records=n_records)
    assert "data_batch_1.bin" in str(e.value) and "vglab data fetch cifar10" in str(e.value)


def test_read_cifar_batch_rejects_checksum_mismatch_and_bad_labels(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(cifar_records(np.array([0, 10]), np.random.default_rng(0)))
    with pytest.raises(DataError, match="label 10 out of range"):
        read_cifar_batch(path)
    with pytest.raises(DataError, match="checksum mismatch"):
        read_cifar_batch(path, "sha256:" + "0" * 64)


# ----------------------------------------------------------------------------- load from a data dir


def test_load_tiny_mnist_and_cifar_from_data_dir(tmp_path, tiny):
    root = write_tree(tmp_path / "data", tiny)
    mnist = load("mnist", root, download=False)
    assert mnist.x_train.shape == (20, 28, 28) and mnist.x_test.shape == (10, 28, 28)
    assert mnist.y_train.tolist() == [i % 10 for i in range(20)] and mnist.pixel_max == 255
    cifar = load("cifar10", root, download=False)
    assert cifar.x_train.shape == (20, 32, 32, 3) and cifar.y_test.tolist() == list(range(10))
    assert cifar.classes[0] == "airplane" and cifar.source.endswith("cifar-10-batches-bin")


def test_load_rejects_corrupt_file_in_data_dir(tmp_path, tiny):
    root = write_tree(tmp_path / "data", tiny)
    bad = root / "cifar10/cifar-10-batches-bin/data_batch_3.bin"
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 1  # one flipped bit: same size, only the checksum can tell
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="data_batch_3.bin: checksum mismatch.*vglab data fetch cifar10"):
        load("cifar10", root)


def test_wrong_record_count_is_an_error(tmp_path, tiny):
    short = idx(np.zeros(9, np.uint8))  # a well-formed IDX file with one label too few
    root = write_tree(tmp_path / "data", {**tiny, "mnist/t10k-labels-idx1-ubyte.gz": short})
    DATASETS["mnist"].checksums["t10k-labels-idx1-ubyte.gz"] = "md5:" + hashlib.md5(short).hexdigest()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: holds labels of shape \(9,\), expected \(10,\)"):
        load("mnist", root)


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, tiny, cache_dir, monkeypatch):
    data_dir, env_dir = write_tree(tmp_path / "arg", tiny), write_tree(tmp_path / "env", tiny)
    write_tree(cache_dir, tiny)
    monkeypatch.setenv("VGLAB_DATA", str(env_dir))
    assert locate("mnist", data_dir) == (data_dir / "mnist").resolve()
    assert load("mnist", data_dir).source == str((data_dir / "mnist").resolve())
    assert locate("mnist") == (env_dir / "mnist").resolve()
    monkeypatch.delenv("VGLAB_DATA")
    assert locate("mnist") == (cache_dir / "mnist").resolve()
    assert locate("mnist", tmp_path / "empty") == (cache_dir / "mnist").resolve()  # falls through


def test_missing_dataset_names_paths_and_fetch_command(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("VGLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as e:
        load("mnist", tmp_path / "arg", download=False)
    message = str(e.value)
    for searched in (tmp_path / "arg" / "mnist", tmp_path / "env" / "mnist", cache_dir / "mnist"):
        assert str(searched) in message
    assert "vglab data fetch mnist" in message and "download=False" in message


def test_failed_download_names_fetch_command_and_leaves_nothing(cache_dir):
    # The conftest points the mirrors at a closed local port.
    with pytest.raises(DataError, match="(?s)download failed.*vglab data fetch cifar10"):
        load("cifar10")
    assert files_under(cache_dir) == []


def test_info_reports_found_missing_and_corrupt(tmp_path, tiny):
    root = write_tree(tmp_path / "data", {k: v for k, v in tiny.items() if k.startswith("mnist")})
    rows = {row["name"]: row for row in info(root)}
    assert list(rows) == ["digits", "mnist", "cifar10"]
    assert rows["digits"]["status"] == "embedded"
    assert rows["mnist"]["status"] == "ok" and rows["mnist"]["verified"] is True
    assert rows["mnist"]["found_in"] == "--data-dir" and rows["mnist"]["bytes"] > 0
    assert rows["cifar10"]["status"] == "missing" and rows["cifar10"]["path"] is None
    (root / "mnist/train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"junk"))
    row = info(root)[1]
    assert row["status"] == "corrupt" and row["verified"] is False
    assert "train-labels-idx1-ubyte.gz" in row["problems"][0]
