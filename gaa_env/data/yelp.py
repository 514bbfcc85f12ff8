"""Yelp sentiment (2 classes) with local data by US state, from the public Yelp Open Dataset files.

Files (JSON lines, from https://www.yelp.com/dataset — "Yelp Open Dataset", JSON download):

* ``yelp_academic_dataset_review.json``: one review per line with ``business_id``, ``stars``, ``text``;
* ``yelp_academic_dataset_business.json``: one business per line with ``business_id``, ``state``.

They are looked for in ``data_dir`` (argument) or else ``$GAA_DATA_DIR``, or in a ``yelp_dataset/``
or ``yelp/`` folder inside it.

How the paper's benchmark (Sec 5.1, Table 2) is rebuilt:

* **label**: ``stars >= 4`` → positive (1), ``stars <= 2`` → negative (0); 3-star reviews are
  dropped (neutral, the usual binarisation of Yelp polarity);
* **groups**: a review's state is its business's ``state``; the ``n_groups`` = 10 states with the most
  (labeled) reviews become the workers' groups 0..9 (largest first) — "20k reviews per worker, local
  data from one of the top-10 US states";
* **per state** at most ``max_per_group`` = 20,000 reviews are kept (a seeded uniform reservoir sample
  over the file), of which ``test_fraction`` = 20 % are held out as the test set (so 16k train per state
  by default; pass ``max_per_group=25000`` for the paper's 20k training reviews per worker);
* **quasi-validation pool**: ``quasi_pool_size`` = 1,000 reviews of one state *outside* the top 10 —
  the 11th most frequent, or ``quasi_group`` (the paper used "South California"; the current Yelp
  Open Dataset covers other states, so the choice is configurable). The env draws B (``quasi_size``
  samples) from this pool instead of the training set;
* **features**: 1024-d hashed TF-IDF of the text (:mod:`gaa_env.data.text_features`), idf fitted on
  the training reviews. The paper used 1024-d sentence embeddings; this is a CPU-friendly stand-in
  with the same dimension, so the 1024-10-2 MLP is unchanged but accuracies differ from the paper.

The first load streams the whole review file (minutes for the full ~5 GB dump) and caches the
feature arrays in ``yelp-features-<key>.npz`` next to the review file (or in ``cache_dir``); the key
hashes the options and the files' sizes/mtimes, so later loads with the same options are fast and
report ``source`` starting with ``"cache"``.
"""

from __future__ import annotations

import json
import os
import random
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

REVIEW_FILE = "yelp_academic_dataset_review.json"
BUSINESS_FILE = "yelp_academic_dataset_business.json"
SUBFOLDERS = ("", "yelp_dataset", "yelp")


def _missing_message(where: str) -> str:
    return (f"Yelp Open Dataset not found {where}: expected {REVIEW_FILE} and {BUSINESS_FILE} (JSON lines, from "
            "https://www.yelp.com/dataset, 'Download JSON'). Put both files in a directory (or its yelp_dataset/ "
            f"subfolder) and pass data_dir= or set ${DATA_DIR_ENV} to it. Without the real files, data=\"synthetic\" "
            "runs the benchmark on a clearly labeled synthetic stand-in (gym.make('GAA-Yelp-v0', data='synthetic')).")


def find_yelp_files(data_dir: str | Path | None) -> tuple[Path, Path]:
    """``(review_file, business_file)`` in ``data_dir`` / ``$GAA_DATA_DIR``, or DataNotFoundError."""
    directory = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if directory is None:
        raise DataNotFoundError(_missing_message(f"(neither data_dir= nor ${DATA_DIR_ENV} is set)"))
    directory = Path(directory).expanduser()
    for sub in SUBFOLDERS:
        folder = directory / sub if sub else directory
        if (folder / REVIEW_FILE).is_file() and (folder / BUSINESS_FILE).is_file():
            return folder / REVIEW_FILE, folder / BUSINESS_FILE
    raise DataNotFoundError(_missing_message(f"in {str(directory)!r}"))


def star_label(stars: float) -> int | None:
    """1 for 4–5 stars, 0 for 1–2 stars, None (dropped) for 3 (and anything strictly between 2 and 4)."""
    if stars >= 4:
        return 1
    if stars <= 2:
        return 0
    return None


def _read_states(business_file: Path) -> dict[str, str]:
    states = {}
    with open(business_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                if obj.get("state"):
                    states[obj["business_id"]] = str(obj["state"])
    return states


def _sample_reviews(review_file: Path, states: dict[str, str], cap: int, seed: int
                    ) -> tuple[dict[str, list[tuple[str, int]]], dict[str, int]]:
    """One streaming pass: a uniform reservoir of ``cap`` labeled reviews per state, and exact counts."""
    rnd = random.Random(seed)
    reservoirs: dict[str, list[tuple[str, int]]] = {}
    counts: dict[str, int] = {}
    with open(review_file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            state = states.get(obj.get("business_id"))
            label = star_label(float(obj["stars"])) if state is not None else None
            if label is None:
                continue
            seen = counts[state] = counts.get(state, 0) + 1
            reservoir = reservoirs.setdefault(state, [])
            if len(reservoir) < cap:
                reservoir.append((obj.get("text") or "", label))
            else:
                j = rnd.randrange(seen)
                if j < cap:
                    reservoir[j] = (obj.get("text") or "", label)
    return reservoirs, counts


def _build(review_file: Path, business_file: Path, *, n_groups: int, max_per_group: int, quasi_group: str | None,
           quasi_pool_size: int, test_fraction: float, dim: int, seed: int) -> dict[str, np.ndarray]:
    reservoirs, counts = _sample_reviews(review_file, _read_states(business_file), max_per_group, seed)
    top, quasi_name = choose_groups(counts, n_groups, quasi_group, f"Yelp reviews in {review_file}")
    records: list[tuple[str, int]] = []
    members: dict[str, list[int]] = {}
    for name in (*top, quasi_name):
        members[name] = list(range(len(records), len(records) + len(reservoirs[name])))
        records.extend(reservoirs[name])
    split = split_groups(members, top, quasi_name, max_per_group=max_per_group, test_fraction=test_fraction,
                         quasi_pool_size=quasi_pool_size, rng=np.random.default_rng(seed))
    texts = [r[0] for r in records]
    labels = np.array([r[1] for r in records], dtype=np.int64)
    parts = (split.train, split.test, split.quasi)
    x_train, x_test, x_quasi = hashed_tfidf([[texts[i] for i in part] for part in parts], dim)
    return {"x_train": x_train, "y_train": labels[split.train], "g_train": split.train_groups,
            "x_test": x_test, "y_test": labels[split.test], "x_quasi": x_quasi, "y_quasi": labels[split.quasi],
            "group_names": np.array(split.group_names), "quasi_group": np.array(split.quasi_group),
            "group_counts": np.array([counts[g] for g in (*top, quasi_name)], dtype=np.int64)}


def load_yelp(data_dir: str | Path | None = None, normalize: bool = False, *, n_groups: int = 10,
              max_per_group: int = 20_000, quasi_group: str | None = None, quasi_pool_size: int = 1000,
              test_fraction: float = 0.2, dim: int = FEATURE_DIM, seed: int = 0,
              cache_dir: str | Path | None = None) -> Dataset:
    """Load the Yelp benchmark (see the module docstring for every choice).

    ``normalize`` is accepted for a uniform loader signature and ignored: rows are already
    L2-normalised TF-IDF vectors.
    """
    del normalize
    check_split_options(max_per_group, test_fraction, quasi_pool_size, n_groups)
    review_file, business_file = find_yelp_files(data_dir)
    options = {"n_groups": n_groups, "max_per_group": max_per_group, "quasi_group": quasi_group,
               "quasi_pool_size": quasi_pool_size, "test_fraction": test_fraction, "dim": dim, "seed": seed}
    cache = cache_path("yelp", [review_file, business_file], options, cache_dir)
    arrays = read_cache(cache)
    if arrays is not None:
        source = f"cache {cache} (Yelp Open Dataset in {review_file.parent})"
    else:
        arrays = _build(review_file, business_file, **options)
        written = write_cache(cache, arrays)
        source = f"Yelp Open Dataset in {review_file.parent}" + (f" (cached to {cache})" if written else "")
    return dataset_from_arrays("yelp", arrays, n_classes=2, source=source)

