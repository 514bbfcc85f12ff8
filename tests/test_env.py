"""GAA-MNIST-v0 behaves as the env contract in README/design.md says."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import gaa_env  # noqa: F401  (registers the ids)
from gaa_env.observations import FEATURE_NAMES

SMALL = dict(n_workers=6, beta=0.5, test_size=500, eval_interval=2)


def make(**kw):
    return gym.make("GAA-MNIST-v0", **{**SMALL, **kw})


def test_registration_is_idempotent_and_the_id_exists():
    import importlib

    importlib.reload(gaa_env)
    assert "GAA-MNIST-v0" in gym.registry


@pytest.mark.parametrize("obs_mode", ["features", "paper"])
@pytest.mark.parametrize("action_mode", ["logits", "simplex", "feature_weights"])
def test_gymnasium_env_checker_passes(obs_mode, action_mode):
    env = make(obs_mode=obs_mode, action_mode=action_mode)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("obs_mode", ["features", "paper"])
def test_sb3_env_checker_passes(obs_mode):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(make(obs_mode=obs_mode).unwrapped, warn=False)


def test_observation_shapes_follow_the_contract():
    env = make(obs_mode="paper")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (25_450, 3 * 6 + 2) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:, -6:], 1 / 6, rtol=1e-6)  # previous credit starts uniform
    assert np.allclose(obs[:, 13], obs[0, 13])  # f_B broadcast in column 2n+1
    env = make()
    obs, info = env.reset(seed=0)
    assert obs.shape == (6, len(FEATURE_NAMES)) and np.isfinite(obs).all()
    assert info["compromised_mask"].sum() == 3


def test_reward_is_the_drop_of_the_quasi_validation_loss():
    env = make()
    _, info0 = env.reset(seed=0)
    _, reward, terminated, truncated, info1 = env.step(np.zeros(6, dtype=np.float32))
    assert reward == pytest.approx(info0["quasi_loss"] - info1["quasi_loss"], abs=1e-6)
    assert not terminated and not truncated


def test_info_reports_ground_truth_credit_mass_and_detection():
    env = make(action_mode="simplex")
    env.reset(seed=0)
    mask = env.unwrapped.simulator.compromised.numpy()
    _, _, _, _, info = env.step((~mask).astype(np.float32))  # oracle credit: zero on attackers
    assert info["byzantine_credit"] == 0.0 and info["credit"].sum() == pytest.approx(1.0)
    assert np.array_equal(info["byzantine_mask"], mask)
    assert info["detection_precision"] == 1.0 and info["detection_recall"] == 1.0
    _, _, _, _, info = env.step(mask.astype(np.float32))  # all credit on attackers
    assert info["byzantine_credit"] == pytest.approx(1.0) and info["detection_recall"] == 0.0
    assert info["test_accuracy_round"] == 2 and 0.0 <= info["test_accuracy"] <= 1.0


def test_episodes_are_horizon_rounds_and_persistent_runs_continue():
    env = make(horizon=3, max_rounds=5)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.reset()  # persistent: same learning process goes on
    assert env.unwrapped.simulator.round_index == 3
    flags = [env.step(env.action_space.sample())[3] for _ in range(2)]
    assert flags == [False, True]  # max_rounds reached
    env.reset()
    assert env.unwrapped.simulator.round_index == 0  # a fresh process


def test_non_persistent_reset_starts_a_fresh_model():
    env = make(persistent=False)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.reset()
    assert env.unwrapped.simulator.round_index == 0


def test_same_seed_and_actions_give_identical_trajectories():
    def rollout():
        env = make(attack="randomized", attack_params={"period": 2})
        obs, _ = env.reset(seed=7)
        trace = [obs]
        rng = np.random.default_rng(0)
        for _ in range(6):
            obs, reward, _, _, _ = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
            trace += [obs, np.array([reward])]
        return trace

    for a, b in zip(rollout(), rollout()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 1.0}, r"beta must be in \[0, 1\), got 1.0"),
        ({"beta": -0.1}, r"beta must be in \[0, 1\), got -0.1"),
        ({"attack": "sneaky"}, r"unknown attack 'sneaky'; allowed: \["),
        ({"tampering": "boom"}, r"unknown tampering 'boom'; allowed: \["),
        ({"obs_mode": "pixels"}, r"unknown obs_mode 'pixels'; allowed: \['features', 'paper'\]"),
        ({"action_mode": "argmax"}, r"unknown action_mode 'argmax'; allowed: \['logits', 'simplex', 'feature"),
        ({"n_workers": 0}, r"n_workers must be an integer >= 1, got 0"),
        ({"betta": 0.5}, r"unknown environment kwarg\(s\) \['betta'\]; allowed: \["),
        ({"attack": "pretense", "attack_params": {"L": 3}}, r"bad parameters \['L'\] for attack pattern 'pretense'"),
    ],
)
def test_bad_configuration_names_the_value_and_the_allowed_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_bad_actions_are_refused_with_a_reason():
    env = make(action_mode="simplex")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(6,\).*got \(5,\)"):
        env.step(np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"NaN/Inf entries at \[2\]"):
        env.step(np.array([1, 1, np.nan, 1, 1, 1], dtype=np.float32))
    with pytest.raises(ValueError, match=r"negative credit at workers \[0\]"):
        env.step(np.array([-1, 1, 1, 1, 1, 1], dtype=np.float32))
    with pytest.raises(ValueError, match="all zeros"):
        env.step(np.zeros(6, dtype=np.float32))


def test_nan_gradients_from_byzantine_workers_do_not_crash_the_env():
    from tests.test_simulator import _NaNTampering  # noqa: F401  (registers 'test_nan')

    env = make(tampering="test_nan")
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, _, _, info = env.step(np.zeros(6, dtype=np.float32))
        assert np.isfinite(obs).all() and np.isfinite(reward) and info["nonfinite_workers"] == 3
    assert np.isfinite(env.unwrapped.simulator.theta.numpy()).all()


def test_a_restored_checkpoint_continues_the_same_trajectory():
    env = make(attack="randomized", attack_params={"period": 2})
    env.reset(seed=3)
    for _ in range(3):
        env.step(np.zeros(6, dtype=np.float32))
    state = env.unwrapped.state_dict()
    expected = [env.step(np.full(6, 0.3, dtype=np.float32))[:2] for _ in range(4)]

    other = make(attack="randomized", attack_params={"period": 2})
    other.reset(seed=99)
    other.unwrapped.load_state_dict(state)
    got = [other.step(np.full(6, 0.3, dtype=np.float32))[:2] for _ in range(4)]
    for (obs_a, r_a), (obs_b, r_b) in zip(expected, got):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert r_a == r_b
    with pytest.raises(ValueError, match="another environment configuration"):
        make(beta=0.2).unwrapped.load_state_dict(state)


def test_feature_weights_score_every_worker_with_one_shared_linear_scorer():
    env = make(action_mode="feature_weights", logit_scale=5.0)
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (len(FEATURE_NAMES),)
    weights = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    weights[1] = -1.0  # prefer small log-norm ratios: RF rows (norm ~ 80) lose their credit
    credit = env.unwrapped.action_to_credit(weights).numpy()
    z = (obs[:, 1] - obs[:, 1].mean()) / obs[:, 1].std()
    expected = np.exp(-5.0 * z) / np.exp(-5.0 * z).sum()  # softmax(logit_scale * Z w) by hand
    np.testing.assert_allclose(credit, expected, rtol=1e-4)
    assert credit[env.unwrapped.simulator.compromised.numpy()].sum() < 1e-3
    with pytest.raises(ValueError, match=r"shape \(7,\) \(one weight per feature\)"):
        env.step(np.zeros(6, dtype=np.float32))
