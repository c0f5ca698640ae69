"""vglab.data.preprocess: scaling, the train-only PCA and its disk cache, subsets."""

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA

from vglab.data import Arrays, load, prepare
from vglab.data import preprocess as pp


def test_scale_maps_pixel_range_onto_minus_one_one():
    np.testing.assert_array_equal(pp.scale(np.array([0, 8, 16], np.uint8), 16), [-1, 0, 1])
    assert pp.scale(np.array([0, 255], np.uint8), 255).tolist() == [-1.0, 1.0]


def test_prepare_digits_mlp(cache_dir):
    arrays = prepare("digits", "mlp")
    assert isinstance(arrays, Arrays) and arrays.kind == "mlp" and arrays.n_classes == 10
    assert arrays.x_train.dtype == arrays.x_test.dtype == np.float32
    assert arrays.y_train.dtype == arrays.y_test.dtype == np.int32
    assert arrays.x_train.shape == (1437, arrays.n_components)
    assert arrays.x_test.shape == (360, arrays.n_components)
    # Same components and projection as scikit-learn's PCA fitted on the scaled train split.
    ds = load("digits")
    x_train = pp.scale(ds.x_train, 16).reshape(1437, -1)
    sk = SkPCA(n_components=0.95, svd_solver="full").fit(x_train)
    assert arrays.n_components == sk.n_components_ == 28
    np.testing.assert_allclose(arrays.x_test, sk.transform(pp.scale(ds.x_test, 16).reshape(360, -1)), atol=1e-4)


def test_prepare_digits_cnn_keeps_shape_in_range():
    arrays = prepare("digits", "cnn")
    assert arrays.x_train.shape == (1437, 8, 8, 1) and arrays.x_test.shape == (360, 8, 8, 1)
    assert arrays.x_train.dtype == np.float32 and arrays.n_components is None
    assert arrays.x_train.min() == -1 and arrays.x_train.max() == 1
    assert -1 <= arrays.x_test.min() and arrays.x_test.max() <= 1


def test_pca_is_fitted_on_the_training_split_only(cache_dir):
    ds = load("digits")
    pca = pp.train_pca(ds)
    train, test = pp.scale(ds.x_train, 16).reshape(1437, -1), pp.scale(ds.x_test, 16).reshape(360, -1)
    np.testing.assert_allclose(pca.mean, train.mean(0), atol=1e-6)
    assert not np.allclose(pca.mean, np.concatenate([train, test]).mean(0), atol=1e-4)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(pca.n_components), atol=1e-8)


def test_second_prepare_reads_the_pca_cache(cache_dir, monkeypatch):
    first = prepare("digits", "mlp")
    cached = list((cache_dir / "pca").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("digits-var0.95-") and cached[0].suffix == ".npz"

    def refit(*args):
        raise AssertionError("the PCA was fitted again instead of read from the cache")

    monkeypatch.setattr(pp, "fit_pca", refit)
    second = prepare("digits", "mlp")
    np.testing.assert_array_equal(first.x_train, second.x_train)
    with pytest.raises(AssertionError):  # another variance is another cache entry
        prepare("digits", "mlp", variance=0.9)
    assert list((cache_dir / "pca").iterdir()) == cached  # and the failure wrote nothing


def test_damaged_pca_cache_is_refitted(cache_dir):
    first = prepare("digits", "mlp")
    (path,) = (cache_dir / "pca").iterdir()
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable PCA cache"):
        second = prepare("digits", "mlp")
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert [p.name for p in (cache_dir / "pca").iterdir()] == [path.name]  # rewritten, no temp files


def test_train_size_is_a_fixed_stratified_subset():
    full = prepare("digits", "mlp")
    small = prepare("digits", "mlp", train_size=500)
    assert small.x_train.shape == (500, full.n_components) and small.n_components == full.n_components
    np.testing.assert_array_equal(small.x_test, full.x_test)  # the test split is untouched
    expected = np.bincount(full.y_train) * 500 / 1437
    assert np.all(np.abs(np.bincount(small.y_train) - expected) <= 1)
    # Rows come from the full split, in canonical order, and the same ones every time.
    keep = pp.stratified_subset(load("digits").y_train, 500)
    assert np.all(np.diff(keep) > 0)
    np.testing.assert_allclose(small.x_train, full.x_train[keep], atol=1e-6)
    np.testing.assert_array_equal(prepare("digits", "mlp", train_size=500).y_train, small.y_train)
    assert not np.array_equal(prepare("digits", "cnn", train_size=500, seed=1).y_train, small.y_train)


def test_a_subset_is_drawn_once_then_read_from_the_cache(tmp_path):
    """scikit-learn draws it (importing it costs ~2 s in each process); later calls read the file."""
    labels = load("digits").y_train
    drawn = pp.stratified_subset(labels, 300, seed=3, cache_dir=tmp_path)
    (path,) = (tmp_path / "subset").iterdir()
    with np.load(path) as f:
        np.savez(path, keep=f["keep"][::-1].copy())  # a marker: a cached answer is returned as stored
    np.testing.assert_array_equal(pp.stratified_subset(labels, 300, seed=3, cache_dir=tmp_path), drawn[::-1])
    path.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="unreadable training subset cache"):
        np.testing.assert_array_equal(pp.stratified_subset(labels, 300, seed=3, cache_dir=tmp_path), drawn)
    assert not np.array_equal(pp.stratified_subset(labels, 300, seed=4, cache_dir=tmp_path), drawn)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mlp, cnn"):
        prepare("digits", "rnn")
    with pytest.raises(ValueError, match="train_size"):
        prepare("digits", "cnn", train_size=5)
    with pytest.raises(ValueError, match="train_size"):
        prepare("digits", "cnn", train_size=2000)
