"""Shared plumbing of the local-data benchmarks (Yelp, Healthcare): groups, splits and the cache.

Both benchmarks split records by a natural group (a US state): the ``n_groups`` largest groups become
the workers' groups ``0 .. n_groups-1`` (largest first; ties by name), one group outside them is held
out as the source of the quasi-validation pool (paper Sec 5.1: "1k reviews randomly sampled from
South California", "1k Alaska records"), and ``test_fraction`` of every worker group's records is
held out as the test set.

Feature arrays are cached in a ``.npz`` written atomically (temp file + ``os.replace``), keyed by a
hash of the loader options, the feature recipe version and the source files' sizes and mtimes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gaa_env.data.datasets import Dataset
from gaa_env.data.text_features import FEATURE_VERSION


@dataclass(frozen=True)
class GroupSplit:
    """Record indices (into the caller's record list) of each part, and which group is which."""

    train: np.ndarray
    train_groups: np.ndarray
    test: np.ndarray
    quasi: np.ndarray
    group_names: tuple[str, ...]
    quasi_group: str


def rank_groups(counts: dict[str, int]) -> list[str]:
    """Group names by decreasing record count, ties broken by name."""
    return sorted(counts, key=lambda g: (-counts[g], g))


def choose_groups(counts: dict[str, int], n_groups: int, quasi_group: str | None, what: str
                  ) -> tuple[list[str], str]:
    """The ``n_groups`` largest groups and the held-out quasi group (default: the next largest)."""
    ranked = rank_groups(counts)
    if len(ranked) < n_groups + 1:
        raise ValueError(f"{what}: need at least n_groups + 1 = {n_groups + 1} groups (workers' groups plus one "
                         f"held out for the quasi-validation pool), found {len(ranked)}: {ranked}")
    top = ranked[:n_groups]
    if quasi_group is None:
        return top, ranked[n_groups]
    if quasi_group in top:
        raise ValueError(f"{what}: quasi_group {quasi_group!r} is one of the workers' groups {top}; "
                         "it must be held out")
    if quasi_group not in counts:
        raise ValueError(f"{what}: unknown quasi_group {quasi_group!r}; groups outside the workers' ones: "
                         f"{ranked[n_groups:]}")
    return top, quasi_group


def split_groups(members: dict[str, list[int] | np.ndarray], top: list[str], quasi_group: str, *,
                 max_per_group: int, test_fraction: float, quasi_pool_size: int,
                 rng: np.random.Generator) -> GroupSplit:
    """Shuffle each group's records (seeded), cap at ``max_per_group``, hold out ``test_fraction``
    per worker group for test, and take up to ``quasi_pool_size`` records of ``quasi_group``."""
    train, train_groups, test = [], [], []
    for gid, name in enumerate(top):
        idx = rng.permutation(np.asarray(members[name], dtype=np.int64))[:max_per_group]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
        train_groups.append(np.full(len(idx) - n_test, gid, dtype=np.int64))
    quasi = rng.permutation(np.asarray(members[quasi_group], dtype=np.int64))[:quasi_pool_size]
    return GroupSplit(train=np.concatenate(train), train_groups=np.concatenate(train_groups),
                      test=np.concatenate(test), quasi=quasi, group_names=tuple(top), quasi_group=quasi_group)


def check_split_options(max_per_group: int, test_fraction: float, quasi_pool_size: int, n_groups: int) -> None:
    for name, value in (("max_per_group", max_per_group), ("quasi_pool_size", quasi_pool_size),
                        ("n_groups", n_groups)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def cache_path(kind: str, sources: list[Path], options: dict[str, object], cache_dir: str | Path | None) -> Path:
    """Where the feature cache of these sources and options lives (next to the first source by default)."""
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    blob = json.dumps({"kind": kind, "version": FEATURE_VERSION, "options": options, "sources": stamp},
                      sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else sources[0].parent
    return folder / f"{kind}-features-{key}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no (readable) cache."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable feature cache {path}: {exc}", stacklevel=3)
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` atomically; warn (do not fail) when the folder is not writable."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"could not write the feature cache {path} ({exc}); the next load recomputes the features "
                      "(pass cache_dir= to cache elsewhere)", stacklevel=3)
        return False


def dataset_from_arrays(name: str, arrays: dict[str, np.ndarray], n_classes: int, source: str) -> Dataset:
    """A grouped :class:`Dataset` from the cache layout (``x_train``, ``g_train``, ``x_quasi``, ...)."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()
         if k in ("x_train", "y_train", "g_train", "x_test", "y_test", "x_quasi", "y_quasi")}
    return Dataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"], n_classes=n_classes, source=source,
                   groups=t["g_train"], x_quasi=t["x_quasi"], y_quasi=t["y_quasi"],
                   group_names=tuple(str(g) for g in arrays["group_names"].tolist()),
                   quasi_group=str(arrays["quasi_group"]))
