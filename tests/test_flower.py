"""The Flower integration: RobustStrategy on hand-made replies, a GAA policy file, and an end-to-end run.

Skipped when Flower is not installed (``pip install 'gaa-env[flower]'``).
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported

import pytest  # noqa: E402

pytest.importorskip("flwr")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from flwr.app import ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict  # noqa: E402

from agents.gaa import GAAAgent  # noqa: E402
from gaa_env.integrations.flower import RobustStrategy, arrays_to_theta, theta_to_arrays  # noqa: E402
from gaa_env.models import FunctionalModel, mlp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LR = 0.1


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = FunctionalModel(mlp(20, 8, 3))
    theta = model.initial_theta()
    quasi_x, quasi_y = torch.randn(8, 20), torch.randint(0, 3, (8,))
    return model, theta, quasi_x, quasi_y


def reply(model, node_id, theta, round_=1):
    """A train reply as a SuperNode would send it (metadata set directly: no running Flower run here)."""
    meta = Metadata(run_id=1, message_id="", src_node_id=node_id, dst_node_id=0, reply_to_message_id="",
                    group_id=str(round_), created_at=time.time(), ttl=60.0, message_type=MessageType.TRAIN)
    content = RecordDict({"arrays": theta_to_arrays(theta, model), "metrics": MetricRecord({"num-examples": 10})})
    return Message(content=content, metadata=meta)


def honest_and_byzantine(model, theta, n_honest=4, far=50.0):
    """Honest clients step along small noisy gradients; node 99 sends a far-away (RF-like) update."""
    gen = torch.Generator().manual_seed(1)
    replies = [reply(model, 10 + i, theta - LR * 0.01 * torch.randn(theta.shape, generator=gen))
               for i in range(n_honest)]
    replies.append(reply(model, 99, theta - LR * torch.full_like(theta, far)))
    return replies


def strategy(model, theta, qx, qy, **kwargs):
    s = RobustStrategy(model, qx, qy, lr=LR, **kwargs)
    s.set_global_arrays(theta_to_arrays(theta, model))
    return s


def test_arrays_roundtrip(setup):
    model, theta, *_ = setup
    arrays = ArrayRecord(model.module.state_dict())
    assert torch.equal(arrays_to_theta(arrays, model), theta)
    assert torch.equal(arrays_to_theta(theta_to_arrays(theta * 2, model), model), theta * 2)
    with pytest.raises(ValueError, match="do not fit"):
        arrays_to_theta(ArrayRecord(mlp(20, 9, 3).state_dict()), model)


@pytest.mark.parametrize("rule", ["krum", "multi_krum", "geomed", "zeno"])
def test_far_away_byzantine_update_gets_zero_credit(setup, rule):
    model, theta, qx, qy = setup
    s = strategy(model, theta, qx, qy, rule=rule, n_byzantine=1)
    arrays, metrics = s.aggregate_train(1, honest_and_byzantine(model, theta))
    credit = metrics["credit"]
    assert len(credit) == 5 and credit[-1] == 0.0  # replies are ordered by node id; 99 is last
    assert sum(credit) == pytest.approx(1.0, abs=1e-5)
    new_theta = arrays_to_theta(arrays, model)
    assert (new_theta - theta).abs().max() < 1.0  # the far-away update (50 per coordinate) was not followed
    assert s.history[-1]["credit"] == credit and s.history[-1]["node_ids"] == [10, 11, 12, 13, 99]
    # θ_new = Σ α_i θ_i: FedAvg with robust weights
    thetas = torch.stack([arrays_to_theta(r.content["arrays"], model) for r in honest_and_byzantine(model, theta)])
    torch.testing.assert_close(new_theta, torch.tensor(credit) @ thetas, atol=1e-5, rtol=1e-5)


def test_median_ignores_far_away_update_and_mean_does_not(setup):
    model, theta, qx, qy = setup
    moved = {}
    for rule in ("median", "mean"):
        s = strategy(model, theta, qx, qy, rule=rule, n_byzantine=1)
        arrays, metrics = s.aggregate_train(1, honest_and_byzantine(model, theta))
        moved[rule] = float((arrays_to_theta(arrays, model) - theta).abs().max())
        assert ("credit" in metrics) == (rule == "mean")  # the coordinate-wise median has no credit vector
    assert moved["median"] < 0.1 < moved["mean"]


def test_nonfinite_update_is_absent_and_round_is_skipped_when_rule_cannot_run(setup):
    model, theta, qx, qy = setup
    replies = honest_and_byzantine(model, theta)[:4] + [reply(model, 99, torch.full_like(theta, float("nan")))]
    s = strategy(model, theta, qx, qy, rule="geomed", n_byzantine=1)
    arrays, metrics = s.aggregate_train(1, replies)
    assert metrics["credit"][-1] == 0.0 and s.history[-1]["absent"] == [99]
    assert bool(torch.isfinite(arrays_to_theta(arrays, model)).all())
    # strict Krum needs n >= 2f+3 = 5 finite rows; with 4 the round is skipped, θ kept, and logged
    s = strategy(model, theta, qx, qy, rule="krum", n_byzantine=1)
    arrays, metrics = s.aggregate_train(1, replies)
    assert arrays is None and metrics["skipped"] == 1 and "krum" in s.history[-1]["skipped"]
    assert torch.equal(s._theta, theta)


@pytest.mark.parametrize("policy", ["paper", "equivariant"])
def test_gaa_policy_file(setup, tmp_path, policy):
    model, theta, qx, qy = setup
    agent = GAAAgent(5, policy=policy, seed=0)
    path = tmp_path / "agent.pt"
    agent.save(path)
    s = strategy(model, theta, qx, qy, gaa_policy=str(path))
    assert s.rule_name == f"gaa-{policy}"
    replies = honest_and_byzantine(model, theta)
    arrays, metrics = s.aggregate_train(1, replies)
    credit = torch.tensor(metrics["credit"])
    assert credit.shape == (5,) and bool((credit >= 0).all()) and float(credit.sum()) == pytest.approx(1.0, abs=1e-5)
    thetas = torch.stack([arrays_to_theta(r.content["arrays"], model) for r in replies])
    torch.testing.assert_close(arrays_to_theta(arrays, model), credit @ thetas, atol=1e-4, rtol=1e-4)
    # same state as the env builds: the policy's α on the same inputs is what the strategy used
    s2 = strategy(model, theta, qx, qy, gaa_policy=GAAAgent.load(path))
    _, metrics2 = s2.aggregate_train(1, replies)
    assert metrics2["credit"] == metrics["credit"]
    # the next round reads the previous credit (α_{t-1}) per node id
    s.set_global_arrays(arrays)
    s.aggregate_train(2, honest_and_byzantine(model, arrays_to_theta(arrays, model)))
    assert s.history[-1]["skipped"] is None
    if policy == "paper":  # the paper policy has a fixed n: another number of replies is a logged skip
        arrays, metrics = s.aggregate_train(3, replies[:4])
        assert arrays is None and "trained for 5 workers" in s.history[-1]["skipped"]


def test_bad_arguments(setup):
    model, theta, qx, qy = setup
    with pytest.raises(ValueError, match="unknown aggregator"):
        RobustStrategy(model, qx, qy, rule="nope")
    with pytest.raises(ValueError, match="lr"):
        RobustStrategy(model, qx, qy, lr=0.0)
    with pytest.raises(ValueError, match="gaa_policy"):
        RobustStrategy(model, qx, qy, gaa_policy=3)
    with pytest.raises(RuntimeError, match="configure_train"):
        RobustStrategy(model, qx, qy).aggregate_train(1, honest_and_byzantine(model, theta))


def test_import_without_flwr_names_the_extra():
    code = "import sys; sys.modules['flwr'] = None; import gaa_env.integrations.flower"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "pip install 'gaa-env[flower]'" in out.stderr


def test_flower_mnist_example_end_to_end(tmp_path):
    """4 clients (1 Byzantine, RF) x 2 rounds on Flower's simulation engine (Ray, loopback), Krum defence."""
    pytest.importorskip("ray")
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "examples" / "flower_mnist.py"), "--clients", "4", "--byzantine", "1",
           "--rounds", "2", "--rule", "krum", "--samples-per-client", "300", "--test-size", "1000",
           "--timeout", "240", "--out", str(out)]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    # ~25 s on an idle 2-core machine; Ray's start-up is slow under load, hence the generous bound.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for row in rounds[1:]:
        assert row["skipped"] is None
        assert sorted(row["partition_ids"]) == [0, 1, 2, 3]
        assert sum(row["byzantine"]) == 1 and row["byzantine_credit"] == 0.0
        assert sum(row["credit"]) == pytest.approx(1.0, abs=1e-5)
    assert rounds[-1]["test_accuracy"] > rounds[0]["test_accuracy"]
    assert "round   2  test acc" in proc.stdout
