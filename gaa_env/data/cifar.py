"""CIFAR-10 from the standard "CIFAR-10 python version" files, offline (no torchvision, no download).

Where the files are looked for, in ``data_dir`` (argument) or else ``$GAA_DATA_DIR``:

1. the folder itself holds ``data_batch_1`` … ``data_batch_5`` and ``test_batch``;
2. it holds the folder ``cifar-10-batches-py/`` with those files (what the official archive unpacks to);
3. it holds the official archive ``cifar-10-python.tar.gz`` (read in place, not extracted).

Each batch is a pickled dict with ``b'data'`` (``uint8 [10000, 3072]``: 1024 red, 1024 green, 1024
blue values of a 32×32 image, row-major) and ``b'labels'`` (10,000 ints in 0..9). Samples are
returned flat (``[N, 3072]`` float32, pixel/255 in [0, 1]); the ResNet-18 reshapes them to
``[3, 32, 32]``. These files are Python pickles: only load copies you trust (e.g. the official
archive from https://www.cs.toronto.edu/~kriz/cifar.html, md5 ``c58f30108f718f92721af3b95e74349a``).

``normalize=True`` standardises each channel with the training-set statistics of the 50k images,
:data:`CIFAR10_MEAN` = (0.4914, 0.4822, 0.4465) and :data:`CIFAR10_STD` = (0.2470, 0.2435, 0.2616)
(the per-pixel standard deviations; the often-quoted (0.2023, 0.1994, 0.2010) are averages of
per-image standard deviations).
"""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from gaa_env.data.datasets import DATA_DIR_ENV, DataNotFoundError, Dataset

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _missing_message(where: str) -> str:
    files = ", ".join((*TRAIN_BATCHES, TEST_BATCH))
    return (f"CIFAR-10 not found {where}: expected the folder {CIFAR10_FOLDER}/ with {files} (the 'CIFAR-10 python "
            f"version', {CIFAR10_ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked or not). Put "
            f"that folder (or the archive) in a directory and pass data_dir= or set ${DATA_DIR_ENV} to it. "
            "Without the real files, data=\"synthetic\" runs the benchmark on a clearly labeled synthetic stand-in "
            "(gym.make('GAA-CIFAR10-v0', data='synthetic')).")


def _decode(blob: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(blob[b"data"], dtype=np.uint8)
        labels = np.asarray(blob[b"labels"], dtype=np.int64)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{name}: not a CIFAR-10 python batch (a dict with b'data' and b'labels')") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{name}: expected data uint8 [N, 3072] and N labels, got data {data.shape}, "
                         f"{len(labels)} labels")
    if len(labels) and not (0 <= labels.min() and labels.max() <= 9):
        raise ValueError(f"{name}: labels must be in 0..9")
    return data, labels


def _locate(directory: Path) -> tuple[str, Path] | None:
    """``("dir", folder)`` or ``("tar", archive)`` holding the batches, or None."""
    for folder in (directory, directory / CIFAR10_FOLDER):
        if all((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return "dir", folder
    if (directory / CIFAR10_ARCHIVE).is_file():
        return "tar", directory / CIFAR10_ARCHIVE
    return None


def _read_batches(kind: str, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = (*TRAIN_BATCHES, TEST_BATCH)
    if kind == "dir":
        out = {}
        for name in names:
            with open(path / name, "rb") as f:
                out[name] = _decode(pickle.load(f, encoding="bytes"), str(path / name))
        return out
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base in names and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                out[base] = _decode(pickle.load(f, encoding="bytes"), f"{path}:{member.name}")
    missing = [n for n in names if n not in out]
    if missing:
        raise DataNotFoundError(f"{path} lacks {missing}. " + _missing_message(f"in {path.parent}"))
    return out


def standardize_cifar(x: torch.Tensor) -> torch.Tensor:
    """Per-channel ``(x − mean) / std`` of flat ``[N, 3072]`` images in [0, 1]."""
    mean = torch.tensor(CIFAR10_MEAN).repeat_interleave(1024)
    std = torch.tensor(CIFAR10_STD).repeat_interleave(1024)
    return (x - mean) / std


def load_cifar10(data_dir: str | Path | None = None, normalize: bool = False) -> Dataset:
    """Load CIFAR-10 (50k train / 10k test, 3072 features, 10 classes) from the python batches.

    ``normalize`` standardises per channel with :data:`CIFAR10_MEAN`/:data:`CIFAR10_STD`; without
    it pixels stay in [0, 1] (as ``load_mnist`` does). Raises :class:`DataNotFoundError` naming the
    files and where to put them when they are absent.
    """
    directory = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if directory is None:
        raise DataNotFoundError(_missing_message(f"(neither data_dir= nor ${DATA_DIR_ENV} is set)"))
    directory = Path(directory).expanduser()
    found = _locate(directory) if directory.is_dir() else None
    if found is None:
        raise DataNotFoundError(_missing_message(f"in {str(directory)!r}"))
    batches = _read_batches(*found)
    xtr = np.concatenate([batches[n][0] for n in TRAIN_BATCHES])
    ytr = np.concatenate([batches[n][1] for n in TRAIN_BATCHES])
    xte, yte = batches[TEST_BATCH]
    x_train = torch.from_numpy(xtr).float().div_(255.0)
    x_test = torch.from_numpy(np.ascontiguousarray(xte)).float().div_(255.0)
    if normalize:
        x_train, x_test = standardize_cifar(x_train), standardize_cifar(x_test)
    source = f"CIFAR-10 python batches in {found[1]}" if found[0] == "dir" else f"CIFAR-10 archive {found[1]}"
    return Dataset("cifar10", x_train, torch.from_numpy(ytr), x_test, torch.from_numpy(np.ascontiguousarray(yte)),
                   n_classes=10, source=source)
