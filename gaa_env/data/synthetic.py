"""Synthetic stand-ins for the benchmarks whose real files are absent — for smoke tests and CI only.

Used only when asked for explicitly (``data="synthetic"`` in the env, or the ``*-synthetic`` dataset
names); every stand-in has ``Dataset.synthetic = True`` and a name ending in ``-synthetic``, and the
env reports both in ``info`` so results on it cannot be mistaken for the paper's benchmarks.

Each stand-in is a seeded Gaussian class-conditional task with the real benchmark's shapes:

    x = μ_y + δ_g + o + ε,   ε ~ N(0, I_D),

class means ``μ_c ~ N(0, s²I)`` scaled so two classes' means are ``class_distance`` apart (in units
of the noise), and — for the local-data benchmarks — a per-group mean shift ``δ_g`` (norm
``group_shift``) plus a per-group class mix ``p_g ~ Dirichlet(label_skew · 1)`` (non-IID groups, as
US states are). Group ``n_groups`` (the last one) is held out as the quasi-validation pool. The
text stand-ins add a common offset ``o`` = :data:`TEXT_OFFSET` to every coordinate: text features
(sentence embeddings, TF-IDF) are not centred, and with centred inputs a constant RF gradient
(0.5 on every coordinate) barely hurts a ReLU MLP, whereas on the real benchmark the mean rule
collapses at β = 0.5 (paper Fig. 4).

| name | D | classes | groups | train / test per group | quasi pool |
|---|---|---|---|---|---|
| ``yelp-synthetic`` | 1024 | 2 | 10 (+1 held out) | 800 / 200 | 1000 |
| ``healthcare-synthetic`` | 1024 | 10 | 50 (+1 held out) | 200 / 50 | 1000 |
| ``cifar10-synthetic`` | 3072 | 10 | shared | 5000 / 1000 in all | (training set) |
| ``mnist-synthetic`` | 784 | 10 | shared | 6000 / 1000 in all | (training set) |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gaa_env.data.datasets import Dataset

TEXT_OFFSET = 0.5


def gaussian_task(name: str, *, n_features: int, n_classes: int, n_groups: int, n_train: int, n_test: int,
                  quasi_pool_size: int = 1000, class_distance: float = 3.0, group_shift: float = 3.0,
                  label_skew: float = 4.0, offset: float = 0.0, seed: int = 0) -> Dataset:
    """A synthetic :class:`Dataset` (see the module docstring).

    With ``n_groups = 0`` the data is shared (no groups, B drawn from the training set) and
    ``n_train``/``n_test`` are totals; otherwise they are per group and one extra group is held out
    as the quasi-validation pool.
    """
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, n_features)) * (class_distance / np.sqrt(2 * n_features))

    def draw(count: int, shift: np.ndarray, mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(n_classes, size=count, p=mix)
        x = means[y] + shift + offset + rng.standard_normal((count, n_features))
        return x.astype(np.float32), y.astype(np.int64)

    uniform = np.full(n_classes, 1.0 / n_classes)
    meta = (f"synthetic stand-in (Gaussian class-conditional, D={n_features}, {n_classes} classes, seed {seed}) — "
            "NOT the real benchmark data")
    if n_groups == 0:
        xtr, ytr = draw(n_train, np.zeros(n_features), uniform)
        xte, yte = draw(n_test, np.zeros(n_features), uniform)
        return Dataset(name, torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                       torch.from_numpy(yte), n_classes=n_classes, source=meta, synthetic=True)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("xtr", "ytr", "gtr", "xte", "yte")}
    for g in range(n_groups + 1):
        shift = rng.standard_normal(n_features) * (group_shift / np.sqrt(n_features))
        mix = rng.dirichlet(np.full(n_classes, label_skew))
        if g == n_groups:
            xq, yq = draw(quasi_pool_size, shift, mix)
            break
        x, y = draw(n_train + n_test, shift, mix)
        parts["xtr"].append(x[:n_train])
        parts["ytr"].append(y[:n_train])
        parts["gtr"].append(np.full(n_train, g, dtype=np.int64))
        parts["xte"].append(x[n_train:])
        parts["yte"].append(y[n_train:])
    t = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    names = tuple(f"synthetic-group-{g}" for g in range(n_groups))
    return Dataset(name, t["xtr"], t["ytr"], t["xte"], t["yte"], n_classes=n_classes,
                   source=meta + f"; {n_groups} groups + 1 held out for the quasi-validation pool", synthetic=True,
                   groups=t["gtr"], x_quasi=torch.from_numpy(xq), y_quasi=torch.from_numpy(yq),
                   group_names=names, quasi_group=f"synthetic-group-{n_groups}")


def load_yelp_synthetic(data_dir: str | Path | None = None, normalize: bool = False, seed: int = 0) -> Dataset:
    """Yelp-shaped stand-in: 1024-d, 2 classes, 10 groups + 1 held out (``data_dir``/``normalize`` ignored)."""
    return gaussian_task("yelp-synthetic", n_features=1024, n_classes=2, n_groups=10, n_train=800, n_test=200,
                         offset=TEXT_OFFSET, seed=seed)


def load_healthcare_synthetic(data_dir: str | Path | None = None, normalize: bool = False, seed: int = 0) -> Dataset:
    """Healthcare-shaped stand-in: 1024-d, 10 classes, 50 groups + 1 held out."""
    return gaussian_task("healthcare-synthetic", n_features=1024, n_classes=10, n_groups=50, n_train=200,
                         n_test=50, offset=TEXT_OFFSET, seed=seed)


def load_cifar10_synthetic(data_dir: str | Path | None = None, normalize: bool = False, seed: int = 0) -> Dataset:
    """CIFAR-10-shaped stand-in: 3072-d (3×32×32), 10 classes, shared data."""
    return gaussian_task("cifar10-synthetic", n_features=3072, n_classes=10, n_groups=0, n_train=5000,
                         n_test=1000, seed=seed)


def load_mnist_synthetic(data_dir: str | Path | None = None, normalize: bool = False, seed: int = 0) -> Dataset:
    """MNIST-shaped stand-in: 784-d, 10 classes, shared data."""
    return gaussian_task("mnist-synthetic", n_features=784, n_classes=10, n_groups=0, n_train=6000, n_test=1000,
                         seed=seed)


SYNTHETIC_DATASETS: dict[str, Callable[..., Dataset]] = {
    "yelp-synthetic": load_yelp_synthetic,
    "healthcare-synthetic": load_healthcare_synthetic,
    "cifar10-synthetic": load_cifar10_synthetic,
    "mnist-synthetic": load_mnist_synthetic,
}
