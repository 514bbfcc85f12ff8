"""End-to-end: the paper's MNIST setting learns, collapses under RF with the mean rule, and an
oracle credit vector (zero on the true Byzantine workers) keeps it learning.

Full scale of the issue (n = 50, batch 64, λ = 0.05, 1,000 rounds) — about 15 s per run on one core.
"""

import gymnasium as gym
import numpy as np
import pytest

import gaa_env  # noqa: F401

ROUNDS = 1000


def final_accuracy(credit_fn, **kwargs):
    env = gym.make("GAA-MNIST-v0", eval_interval=ROUNDS, horizon=ROUNDS, max_rounds=ROUNDS, **kwargs)
    env.reset(seed=0)
    sim = env.unwrapped.simulator
    info = {}
    for _ in range(ROUNDS):
        _, _, _, _, info = env.unwrapped.step_with_credit(credit_fn(sim))
    assert info["test_accuracy_round"] == ROUNDS
    return info["test_accuracy"], info


def uniform(sim):
    import torch

    return torch.full((sim.n_workers,), 1.0 / sim.n_workers)


def oracle(sim):
    honest = (~sim.current.byzantine).float()
    return honest / honest.sum()


def test_no_attack_mean_rule_reaches_90_percent():
    accuracy, _ = final_accuracy(uniform, beta=0.0, attack="none")
    assert accuracy >= 0.90


def test_mean_rule_collapses_under_static_rf_at_half_byzantine():
    accuracy, info = final_accuracy(uniform, beta=0.5, attack="static", tampering="rf")
    assert accuracy <= 0.20
    assert info["byzantine_credit"] == pytest.approx(0.5)


def test_oracle_credit_keeps_learning_under_static_rf():
    accuracy, info = final_accuracy(oracle, beta=0.5, attack="static", tampering="rf")
    assert accuracy >= 0.90 and info["byzantine_credit"] == 0.0
    assert np.array_equal(info["byzantine_mask"], info["compromised_mask"])
