"""Healthcare (10 classes) with local data by US state, from a user-supplied table.

The paper's Healthcare benchmark ("20k treatment descriptions per worker, local data from one of 50
states", 1024-d text embeddings, 10 disease classes; quasi-validation pool: 1k Alaska records) was
built from data that is not published with the paper, so the records come from a table you supply:

* ``healthcare.csv`` (or ``healthcare.csv.gz``, or ``healthcare.parquet``) in ``data_dir`` / ``$GAA_DATA_DIR``,
  or ``data_dir``/``path`` pointing at the file itself;
* columns ``label`` (integer class ids in ``0 .. n_classes-1`` = 0..9, or at most ``n_classes`` class
  names — then mapped to ids in sorted order),
  ``group`` (e.g. the state) and either ``text`` (featurised with the same 1024-d hashed TF-IDF as
  Yelp, :mod:`gaa_env.data.text_features`) or the ready-made feature columns ``f0`` … ``f1023``
  (e.g. your own sentence embeddings; they take precedence over ``text`` and are used as given);
* Parquet is read with pandas and needs pyarrow (or fastparquet) installed; without them a clear
  error says so — convert to CSV instead. CSV is read with pandas when importable, else with the
  standard ``csv`` module.

Split (as Yelp, :mod:`gaa_env.data.grouped`): the ``n_groups`` = 50 largest groups become the workers'
groups 0..49; ``quasi_group`` (default: the 51st largest group; the paper used Alaska) is held out and
up to ``quasi_pool_size`` = 1,000 of its records form the quasi-validation pool; per worker group at
most ``max_per_group`` = 20,000 records are kept (seeded sample), ``test_fraction`` = 20 % of them held
out for test. Features are cached in ``healthcare-features-<key>.npz`` next to the table (or in
``cache_dir``).
"""

from __future__ import annotations

import csv
import gzip
import os
import sys
from pathlib import Path

import numpy as np

from gaa_env.data.datasets import DATA_DIR_ENV, DataNotFoundError, Dataset
from gaa_env.data.grouped import (
    cache_path,
    check_split_options,
    choose_groups,
    dataset_from_arrays,
    read_cache,
    split_groups,
    write_cache,
)
from gaa_env.data.text_features import FEATURE_DIM, hashed_tfidf

TABLE_FILES = ("healthcare.csv", "healthcare.csv.gz", "healthcare.parquet")


def _missing_message(where: str) -> str:
    return (f"Healthcare table not found {where}: expected one of {', '.join(TABLE_FILES)} with columns label, "
            f"group and text (or feature columns f0..f{FEATURE_DIM - 1}). Put the file in a directory and pass "
            f"data_dir= (the directory or the file) or set ${DATA_DIR_ENV}. Without real records, "
            "data=\"synthetic\" runs the benchmark on a clearly labeled synthetic stand-in "
            "(gym.make('GAA-Healthcare-v0', data='synthetic')).")


def find_healthcare_file(data_dir: str | Path | None) -> Path:
    """The table in ``data_dir`` / ``$GAA_DATA_DIR`` (a folder with one of :data:`TABLE_FILES`, or a file)."""
    location = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if location is None:
        raise DataNotFoundError(_missing_message(f"(neither data_dir= nor ${DATA_DIR_ENV} is set)"))
    location = Path(location).expanduser()
    if location.is_file():
        return location
    for name in TABLE_FILES:
        if (location / name).is_file():
            return location / name
    raise DataNotFoundError(_missing_message(f"in {str(location)!r}"))


def _pandas():
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def read_table(path: Path, columns_wanted: list[str]) -> dict[str, np.ndarray]:
    """The columns of ``path`` (CSV[.gz] or Parquet) that are in ``columns_wanted``, as numpy arrays."""
    pd = _pandas()
    if _is_parquet(path):
        if pd is None:
            raise ImportError(f"reading {path} needs pandas and pyarrow (or fastparquet): `pip install pandas "
                              "pyarrow`, or convert the table to CSV (healthcare.csv)")
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise ImportError(f"reading {path} needs a Parquet engine for pandas: `pip install pyarrow` (or "
                              f"fastparquet), or convert the table to CSV (healthcare.csv). ({exc})") from exc
        return {c: frame[c].to_numpy() for c in frame.columns if c in columns_wanted}
    if pd is not None:
        frame = pd.read_csv(path, keep_default_na=False, low_memory=False)
        return {c: frame[c].to_numpy() for c in frame.columns if c in columns_wanted}
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        keep = [(i, c) for i, c in enumerate(header) if c in columns_wanted]
        values: dict[str, list[str]] = {c: [] for _, c in keep}
        for row in reader:
            for i, c in keep:
                values[c].append(row[i] if i < len(row) else "")
    return {c: np.array(v, dtype=object) for c, v in values.items()}


def encode_labels(values: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer class ids in ``[0, n_classes)`` (kept as they are) or at most ``n_classes`` class names
    (ids in sorted order)."""
    arr = np.asarray(values)
    ints = None
    if arr.dtype.kind in "iu":
        ints = arr.astype(np.int64)
    elif arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        ints = arr.astype(np.int64)
    else:
        try:
            ints = np.array([int(str(v).strip()) for v in arr], dtype=np.int64)
        except ValueError:
            ints = None
    if ints is not None:
        if len(ints) and (ints.min() < 0 or ints.max() >= n_classes):
            raise ValueError(f"integer labels must be in [0, {n_classes}), got [{ints.min()}, {ints.max()}]")
        return ints
    names, codes = np.unique(arr.astype(str), return_inverse=True)
    if len(names) > n_classes:
        raise ValueError(f"{len(names)} label names but the model has {n_classes} classes: {names[:12].tolist()}")
    return codes.astype(np.int64)


def _build(path: Path, *, n_groups: int, max_per_group: int, quasi_group: str | None, quasi_pool_size: int,
           test_fraction: float, dim: int, n_classes: int, seed: int) -> dict[str, np.ndarray]:
    feature_columns = [f"f{i}" for i in range(dim)]
    table = read_table(path, ["label", "group", "text", *feature_columns])
    missing = [c for c in ("label", "group") if c not in table]
    has_features = all(c in table for c in feature_columns)
    if not has_features and "text" not in table:
        missing.append(f"text (or f0..f{dim - 1})")
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {sorted(table)[:12]}")
    labels = encode_labels(table["label"], n_classes)
    groups = np.asarray(table["group"]).astype(str)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    top, quasi_name = choose_groups(dict(zip(names.tolist(), counts.tolist())), n_groups, quasi_group,
                                    f"Healthcare table {path}")
    index = {name: k for k, name in enumerate(names.tolist())}
    members = {name: np.flatnonzero(inverse == index[name]) for name in (*top, quasi_name)}
    split = split_groups(members, top, quasi_name, max_per_group=max_per_group, test_fraction=test_fraction,
                         quasi_pool_size=quasi_pool_size, rng=np.random.default_rng(seed))
    parts = (split.train, split.test, split.quasi)
    if has_features:
        matrix = np.stack([np.asarray(table[c], dtype=np.float32) for c in feature_columns], axis=1)
        x_train, x_test, x_quasi = (matrix[p] for p in parts)
    else:
        texts = np.asarray(table["text"]).astype(str)
        x_train, x_test, x_quasi = hashed_tfidf([texts[p].tolist() for p in parts], dim)
    return {"x_train": x_train, "y_train": labels[split.train], "g_train": split.train_groups,
            "x_test": x_test, "y_test": labels[split.test], "x_quasi": x_quasi, "y_quasi": labels[split.quasi],
            "group_names": np.array(split.group_names), "quasi_group": np.array(split.quasi_group),
            "features": np.array("columns" if has_features else "hashed_tfidf")}


def load_healthcare(data_dir: str | Path | None = None, normalize: bool = False, *, path: str | Path | None = None,
                    n_groups: int = 50, max_per_group: int = 20_000, quasi_group: str | None = None,
                    quasi_pool_size: int = 1000, test_fraction: float = 0.2, dim: int = FEATURE_DIM,
                    n_classes: int = 10, seed: int = 0, cache_dir: str | Path | None = None) -> Dataset:
    """Load the Healthcare benchmark from a user table (see the module docstring).

    ``normalize`` is accepted for a uniform loader signature and ignored (features are used as given).
    """
    del normalize
    check_split_options(max_per_group, test_fraction, quasi_pool_size, n_groups)
    table_file = find_healthcare_file(path if path is not None else data_dir)
    options = {"n_groups": n_groups, "max_per_group": max_per_group, "quasi_group": quasi_group,
               "quasi_pool_size": quasi_pool_size, "test_fraction": test_fraction, "dim": dim,
               "n_classes": n_classes, "seed": seed}
    cache = cache_path("healthcare", [table_file], options, cache_dir)
    arrays = read_cache(cache)
    if arrays is not None:
        source = f"cache {cache} (Healthcare table {table_file})"
    else:
        arrays = _build(table_file, **options)
        written = write_cache(cache, arrays)
        source = f"Healthcare table {table_file}" + (f" (cached to {cache})" if written else "")
    features = str(arrays["features"])
    return dataset_from_arrays("healthcare", arrays, n_classes=n_classes,
                               source=f"{source}; features: {features}")
