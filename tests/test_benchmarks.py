"""CIFAR-10, Yelp and Healthcare: loaders on tiny files in the real formats, synthetic stand-ins, env ids."""

import gzip
import json
import pickle
import tarfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import gaa_env
from gaa_env.data import DATASETS, DataNotFoundError, load_cifar10, load_dataset, load_healthcare, load_yelp
from gaa_env.data import healthcare as healthcare_module
from gaa_env.data import yelp as yelp_module
from gaa_env.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from gaa_env.data.text_features import hash_tokens, hashed_tfidf
from gaa_env.envs.config import BENCHMARKS
from gaa_env.models import FunctionalModel, yelp_mlp


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    monkeypatch.delenv("GAA_DATA_DIR", raising=False)


# ---------------------------------------------------------------- CIFAR-10
def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(), b"filenames": [b"x.png"] * n}


def write_cifar(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(n - 1, 9)
    for name, blob in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(blob, f)
    return folder, batches


def test_cifar_python_batches_load_from_the_folder_or_its_parent(tmp_path, monkeypatch):
    folder, batches = write_cifar(tmp_path)
    ds = load_cifar10(data_dir=tmp_path)
    assert ds.x_train.shape == (20, 3072) and ds.x_test.shape == (3, 3072) and ds.n_classes == 10
    assert ds.y_train.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert torch.equal(ds.x_train[:4], torch.from_numpy(batches["data_batch_1"][b"data"]).float() / 255)
    assert ds.name == "cifar10" and not ds.synthetic and ds.groups is None and ds.x_quasi is None
    assert torch.equal(load_cifar10(data_dir=folder).x_test, ds.x_test)  # the folder itself
    monkeypatch.setenv("GAA_DATA_DIR", str(tmp_path))
    assert torch.equal(load_dataset("cifar10").y_test, ds.y_test)  # $GAA_DATA_DIR
    std = load_cifar10(data_dir=tmp_path, normalize=True)
    raw = batches["data_batch_1"][b"data"][0]
    for channel in range(3):  # channel-major layout: 1024 R, then G, then B
        k = channel * 1024 + 5
        expected = (raw[k] / 255 - CIFAR10_MEAN[channel]) / CIFAR10_STD[channel]
        assert float(std.x_train[0, k]) == pytest.approx(expected, abs=1e-5)


def test_cifar_archive_is_read_in_place(tmp_path):
    folder, _ = write_cifar(tmp_path / "src")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    ds = load_cifar10(data_dir=tmp_path)
    assert ds.x_train.shape == (20, 3072) and "archive" in ds.source


def test_cifar_missing_or_malformed_files_are_explained(tmp_path):
    with pytest.raises(DataNotFoundError, match="data_batch_1.*test_batch") as err:
        load_cifar10(data_dir=tmp_path)
    assert "cifar-10-batches-py" in str(err.value) and 'data="synthetic"' in str(err.value)
    with pytest.raises(DataNotFoundError, match="GAA_DATA_DIR"):
        load_cifar10()
    folder, _ = write_cifar(tmp_path / "bad")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(data_dir=folder)


# -------------------------------------------------------------------- Yelp
STATES = [f"S{k:02d}" for k in range(12)]


def write_yelp(folder):
    """12 states; state k has 14 − k labeled reviews (+ a 3-star one, dropped). S10 (11th) is all negative,
    S11 all positive, the others alternate; a review of an unknown business is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "yelp_academic_dataset_business.json", "w") as f:
        for k, state in enumerate(STATES):
            f.write(json.dumps({"business_id": f"b{k}", "name": "x", "state": state}) + "\n")
        f.write(json.dumps({"business_id": "nostate", "state": None}) + "\n")
    with open(folder / "yelp_academic_dataset_review.json", "w") as f:
        for k, state in enumerate(STATES):
            for j in range(14 - k):
                positive = {10: False, 11: True}.get(k, j % 2 == 0)
                stars = 5 if positive else 1 + j % 2
                text = ("great tasty friendly" if positive else "awful cold rude") + f" visit {state.lower()} {j}"
                f.write(json.dumps({"review_id": f"r{k}-{j}", "business_id": f"b{k}", "stars": stars,
                                    "text": text}) + "\n")
            f.write(json.dumps({"business_id": f"b{k}", "stars": 3, "text": "ok"}) + "\n")
        f.write(json.dumps({"business_id": "unknown", "stars": 5, "text": "lost"}) + "\n")
        f.write("\n")


def test_yelp_groups_labels_splits_and_quasi_pool(tmp_path):
    write_yelp(tmp_path)
    ds = load_yelp(data_dir=tmp_path)
    assert ds.group_names == tuple(STATES[:10]) and ds.quasi_group == "S10" and ds.n_classes == 2
    counts = [14 - k for k in range(10)]
    n_test = [round(c * 0.2) for c in counts]
    assert torch.bincount(ds.groups).tolist() == [c - t for c, t in zip(counts, n_test)]
    assert len(ds.y_test) == sum(n_test) and ds.x_train.shape == (sum(counts) - sum(n_test), 1024)
    assert ds.x_train.dtype == torch.float32 and torch.allclose(ds.x_train.norm(dim=1), torch.ones(len(ds.x_train)))
    assert int(ds.y_train.sum()) + int(ds.y_test.sum()) == sum((c + 1) // 2 for c in counts)  # 3 stars dropped
    assert ds.x_quasi.shape == (4, 1024) and ds.y_quasi.tolist() == [0] * 4  # S10: 4 negative reviews
    other = load_yelp(data_dir=tmp_path, quasi_group="S11", max_per_group=5, cache_dir=tmp_path / "c2")
    assert other.quasi_group == "S11" and other.y_quasi.tolist() == [1] * 3
    assert torch.bincount(other.groups).tolist() == [4] * 10  # 5 per state, 1 held out for test
    with pytest.raises(ValueError, match="held out"):
        load_yelp(data_dir=tmp_path, quasi_group="S03")


def test_yelp_features_are_cached_atomically_and_reused(tmp_path, monkeypatch):
    write_yelp(tmp_path / "yelp_dataset")
    first = load_yelp(data_dir=tmp_path)
    caches = list((tmp_path / "yelp_dataset").glob("yelp-features-*.npz"))
    assert len(caches) == 1 and not first.source.startswith("cache")
    assert not list((tmp_path / "yelp_dataset").glob("*.tmp"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the JSON was parsed again")

    monkeypatch.setattr(yelp_module, "_build", no_rebuild)
    second = load_yelp(data_dir=tmp_path)
    assert second.source.startswith("cache ") and str(caches[0]) in second.source
    for field in ("x_train", "y_train", "groups", "x_test", "y_test", "x_quasi", "y_quasi"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    assert second.group_names == first.group_names and second.quasi_group == first.quasi_group
    with pytest.raises(AssertionError, match="parsed again"):  # other options → another cache key
        load_yelp(data_dir=tmp_path, max_per_group=3)


def test_yelp_missing_files_are_explained(tmp_path):
    with pytest.raises(DataNotFoundError, match="yelp_academic_dataset_review.json") as err:
        load_yelp(data_dir=tmp_path)
    assert "yelp_academic_dataset_business.json" in str(err.value) and 'data="synthetic"' in str(err.value)


def test_hashed_tfidf_is_deterministic_idf_weighted_and_normalised():
    train = ["the food was good", "the service was bad", "the the the"]
    x_train, x_other = hashed_tfidf([train, ["good good good", "", "unseenword"]])
    assert x_train.shape == (3, 1024) and x_other.dtype == np.float32
    assert np.allclose(np.linalg.norm(x_train, axis=1), 1.0) and not x_other[1].any()  # empty text → zeros
    assert np.array_equal(hashed_tfidf([train])[0], x_train)
    (bucket_the, bucket_good), (sign_the, sign_good) = hash_tokens(["the", "good"])
    row = x_train[0]  # "the" is in every training doc (idf 1), "good" in one (idf log(4/2)+1)
    assert abs(row[bucket_good]) > abs(row[bucket_the]) and np.sign(row[bucket_good]) == sign_good
    assert hash_tokens(["the"])[0][0] == bucket_the  # stable across calls (and processes: blake2b)


# -------------------------------------------------------------- Healthcare
def write_healthcare_csv(path, with_text=True, rows_per_group=(9, 8, 7, 6, 5, 4)):
    lines = ["label,group,text" if with_text else "label,group," + ",".join(f"f{i}" for i in range(1024))]
    for g, count in enumerate(rows_per_group):
        for j in range(count):
            label = (g + j) % 10
            if with_text:
                lines.append(f'{label},G{g},"patient, case {j}: treatment for condition {label}"')
            else:
                lines.append(f"{label},G{g}," + ",".join([str(label + g / 10)] * 1024))
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write("\n".join(lines) + "\n")


def test_healthcare_csv_text_groups_and_quasi_pool(tmp_path, monkeypatch):
    write_healthcare_csv(tmp_path / "healthcare.csv")
    ds = load_healthcare(data_dir=tmp_path, n_groups=4)
    assert ds.group_names == ("G0", "G1", "G2", "G3") and ds.quasi_group == "G4"
    assert torch.bincount(ds.groups).tolist() == [7, 6, 6, 5] and len(ds.y_test) == 2 + 2 + 1 + 1
    assert ds.x_quasi.shape == (5, 1024) and sorted(ds.y_quasi.tolist()) == [4, 5, 6, 7, 8]
    assert ds.n_classes == 10 and "hashed_tfidf" in ds.source
    assert load_healthcare(data_dir=tmp_path, n_groups=4).source.startswith("cache ")
    monkeypatch.setattr(healthcare_module, "_pandas", lambda: None)  # the stdlib csv path gives the same data
    plain = load_healthcare(data_dir=tmp_path / "healthcare.csv", n_groups=4, cache_dir=tmp_path / "plain")
    assert torch.equal(plain.x_train, ds.x_train) and torch.equal(plain.y_quasi, ds.y_quasi)
    with pytest.raises(ValueError, match="n_groups \\+ 1"):
        load_healthcare(data_dir=tmp_path, n_groups=6)


def test_healthcare_feature_columns_are_used_as_given(tmp_path):
    write_healthcare_csv(tmp_path / "healthcare.csv.gz", with_text=False)
    ds = load_healthcare(data_dir=tmp_path, n_groups=5, quasi_group="G5")
    assert ds.x_train.shape[1] == 1024 and ds.quasi_group == "G5" and "columns" in ds.source
    expected = ds.y_train.float() + ds.groups.float() / 10  # every feature = label + group/10
    assert torch.allclose(ds.x_train[:, 7], expected)


def test_healthcare_missing_table_and_parquet_engine_are_explained(tmp_path):
    with pytest.raises(DataNotFoundError, match="healthcare.csv") as err:
        load_healthcare(data_dir=tmp_path)
    assert 'data="synthetic"' in str(err.value)
    (tmp_path / "healthcare.parquet").write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            load_healthcare(data_dir=tmp_path)


# ------------------------------------------------------- synthetic and env
SMALL = {"GAA-Yelp-v0": dict(n_workers=4, test_size=50), "GAA-Healthcare-v0": dict(n_workers=5, test_size=50),
         "GAA-CIFAR10-v0": dict(n_workers=2, batch_size=1, quasi_size=1, test_size=4)}


def test_benchmarks_and_ids_follow_table_2():
    assert {gaa_env.ENV_IDS[i] for i in SMALL} == {"cifar10", "yelp", "healthcare"}
    assert all(i in gym.registry for i in SMALL)
    cifar, yelp, health = BENCHMARKS["cifar10"], BENCHMARKS["yelp"], BENCHMARKS["healthcare"]
    assert (cifar.model, cifar.n_workers, cifar.batch_size, cifar.max_rounds, cifar.partition) == (
        "resnet18", 50, 64, 10000, "shared")
    assert (yelp.model, yelp.n_workers, yelp.batch_size, yelp.max_rounds, yelp.partition) == (
        "yelp_mlp", 10, 256, 20000, "by_group")
    assert (health.model, health.n_workers, health.batch_size, health.max_rounds, health.partition) == (
        "healthcare_mlp", 50, 256, 40000, "by_group")


@pytest.mark.parametrize(("name", "shape", "classes", "groups"), [
    ("yelp-synthetic", 1024, 2, 10), ("healthcare-synthetic", 1024, 10, 50), ("cifar10-synthetic", 3072, 10, 0)])
def test_synthetic_stand_ins_have_the_real_shapes_and_say_so(name, shape, classes, groups):
    ds = DATASETS[name]()
    assert ds.synthetic and ds.name == name and "synthetic" in ds.source and ds.n_features == shape
    assert set(ds.y_train.unique().tolist()) == set(range(classes)) and ds.n_classes == classes
    if groups:
        assert len(ds.groups.unique()) == groups and ds.x_quasi.shape[1] == shape
        assert ds.quasi_group not in ds.group_names
    else:
        assert ds.groups is None and ds.x_quasi is None
    assert torch.equal(DATASETS[name]().x_train[:5], ds.x_train[:5])  # seeded


@pytest.mark.parametrize("env_id", list(SMALL))
def test_gymnasium_env_checker_passes_on_the_synthetic_stand_ins(env_id):
    env = gym.make(env_id, data="synthetic", eval_interval=0, **SMALL[env_id])
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=1)
    assert info["synthetic"] is True and info["dataset"].endswith("-synthetic")


def test_quasi_set_is_drawn_from_the_held_out_pool():
    env = gym.make("GAA-Yelp-v0", data="synthetic", n_workers=10, eval_interval=0)
    sim = env.unwrapped.simulator
    env.reset(seed=3)
    pool, train = sim.dataset.x_quasi, sim.dataset.x_train
    for row in sim.quasi_x:
        assert (pool == row).all(dim=1).any() and not (train == row).all(dim=1).any()
    assert sim.partition.n_workers == 10 and len(sim.quasi_x) == 8


@pytest.mark.parametrize("env_id", list(SMALL))
def test_real_data_absent_names_the_files_and_the_synthetic_option(env_id, tmp_path):
    with pytest.raises(DataNotFoundError, match='data="synthetic"'):
        gym.make(env_id, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="allowed: \\['real', 'synthetic'\\]"):
        gym.make(env_id, data="fake")


def test_yelp_env_runs_on_real_format_files(tmp_path):
    write_yelp(tmp_path)
    env = gym.make("GAA-Yelp-v0", data_dir=str(tmp_path), batch_size=4, quasi_size=2, eval_interval=1)
    _, info = env.reset(seed=0)
    assert info["dataset"] == "yelp" and info["synthetic"] is False
    sim = env.unwrapped.simulator
    assert sim.partition.sizes.tolist() == torch.bincount(sim.dataset.groups).tolist()  # one state per worker
    _, _, _, _, info = env.step(np.zeros(10, dtype=np.float32))
    assert info["test_accuracy"] is not None


def test_worker_chunks_give_the_same_gradients():
    model = FunctionalModel(yelp_mlp())
    theta, x, y = model.initial_theta(), torch.randn(7, 5, 1024), torch.randint(0, 2, (7, 5))
    full = model.worker_gradients(theta, x, y)
    assert torch.allclose(model.worker_gradients(theta, x, y, worker_chunk=3), full, atol=1e-6)
    model.worker_chunk = 2
    assert torch.allclose(model.worker_gradients(theta, x, y), full, atol=1e-6)


def _final_accuracy(credit_rule, rounds=200):
    env = gym.make("GAA-Yelp-v0", data="synthetic", beta=0.5, attack="static", tampering="rf", eval_interval=0)
    env.reset(seed=0)
    sim = env.unwrapped.simulator
    for _ in range(rounds):
        env.unwrapped.step_with_credit(credit_rule(sim.current.byzantine))
    return sim.evaluate()


def test_rf_at_half_byzantine_breaks_the_mean_but_not_the_oracle_credit():
    """Paper Fig. 4 (Yelp, β = 0.5, static RF): the mean rule falls to a constant prediction, while zero
    credit on the Byzantine workers learns. Measured (200 rounds, seed 0): mean 0.541 (the majority class
    of the test set), oracle 0.915."""
    mean = _final_accuracy(lambda byz: torch.full((len(byz),), 1.0 / len(byz)))
    oracle = _final_accuracy(lambda byz: (~byz).float() / (~byz).sum())
    assert mean < 0.6 and oracle > 0.8
