"""Agents: the paper's GAA policy and its online trainer, fixed rules, the oracle, SB3 agents."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import gaa_env  # noqa: F401
from agents.gaa import GAAAgent, PaperPolicy
from agents.rules import OracleAgent, RuleAgent
from agents.sb3 import SB3Agent, load_hyperparams, make_sb3_model
from gaa_env.observations import paper_column_means, paper_observation

SMALL = dict(n_workers=6, beta=0.5, test_size=500, eval_interval=0)


def make(**kw):
    return gym.make("GAA-MNIST-v0", **{**SMALL, **kw})


def test_paper_policy_has_the_papers_parameter_count():
    # (3n + 2) * n weights + n biases: 7,650 for the paper's n = 50 workers
    assert sum(p.numel() for p in PaperPolicy(50).parameters()) == (3 * 50 + 2) * 50 + 50 == 7650


def test_column_means_policy_equals_the_row_wise_policy_on_the_full_matrix():
    env = make(obs_mode="paper")
    obs, _ = env.reset(seed=0)
    sim = env.unwrapped.simulator
    policy = PaperPolicy(6)
    prev = torch.full((6,), 1 / 6)
    rows = paper_observation(sim.current, sim.theta, prev)
    np.testing.assert_allclose(rows.numpy(), obs, rtol=1e-6)  # the env's obs is that matrix
    means = paper_column_means(sim.current, sim.theta, prev)
    torch.testing.assert_close(means, rows.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(policy(means), policy.forward_rows(rows), rtol=1e-4, atol=1e-6)


def _play(agent, env, rounds):
    infos = []
    for _ in range(rounds):
        _, _, term, trunc, info = agent.play(env.unwrapped)
        infos.append(info)
        if term or trunc:
            env.reset()
    return infos


def test_gaa_learns_once_per_T_round_episode_and_inherits_alpha():
    env = make(horizon=5)
    env.reset(seed=0)
    agent = GAAAgent(6, seed=0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    infos = _play(agent, env, 10)
    assert agent.episodes_trained == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    assert agent._alpha_prev is not None and not agent._alpha_prev.requires_grad  # inherited α_T
    assert all(info["credit"].sum() == pytest.approx(1.0, abs=1e-5) for info in infos)


def test_gaa_freezes_after_train_episodes():
    env = make(horizon=5)
    env.reset(seed=0)
    agent = GAAAgent(6, train_episodes=1)
    _play(agent, env, 5)
    frozen = [p.detach().clone() for p in agent.policy.parameters()]
    _play(agent, env, 10)
    assert agent.episodes_trained == 1
    assert all(torch.equal(a, b) for a, b in zip(frozen, agent.policy.parameters()))


def test_gaa_objective_gradient_matches_finite_differences():
    # J(α) = f_B(θ − λ α·G) − f_B(θ) for one round; BPTT through the simulator's step must
    # give the same dJ/dα as a finite difference of the simulator itself.
    env = make()
    env.reset(seed=1)
    sim = env.unwrapped.simulator
    alpha = torch.full((6,), 1 / 6, dtype=torch.float64, requires_grad=True)
    theta = sim.theta.double()
    G = sim.current.received.double()

    def objective(a):
        return sim.model.loss(theta - sim.lr * (a @ G), sim.quasi_x.double(), sim.quasi_y)

    (grad,) = torch.autograd.grad(objective(alpha), alpha)
    eps = 1e-6
    for i in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[i] = eps
        fd = (objective(alpha.detach() + e) - objective(alpha.detach() - e)) / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-7)


def test_gaa_checkpoint_round_trip(tmp_path):
    env = make()
    env.reset(seed=0)
    agent = GAAAgent(6, policy="equivariant")
    _play(agent, env, 5)
    agent.save(tmp_path / "gaa.pt")
    loaded = GAAAgent.load(tmp_path / "gaa.pt")
    assert loaded.episodes_trained == 1 and loaded.config == agent.config
    for a, b in zip(agent.policy.parameters(), loaded.policy.parameters()):
        assert torch.equal(a, b)
    assert not (tmp_path / "gaa.pt.tmp").exists()


def test_bad_gaa_hyperparameters():
    with pytest.raises(ValueError, match=r"unknown GAA policy 'lstm'; allowed: \['paper', 'equivariant'\]"):
        GAAAgent(6, policy="lstm")
    with pytest.raises(ValueError, match="gamma must be in"):
        GAAAgent(6, gamma=1.5)


def test_oracle_puts_no_credit_on_byzantine_workers():
    env = make()
    env.reset(seed=0)
    infos = _play(OracleAgent(), env, 3)
    assert all(info["byzantine_credit"] == 0.0 for info in infos)


def test_rule_agent_drives_the_env_like_a_policy():
    env = make(beta=0.2, n_workers=10)
    env.reset(seed=0)
    infos = _play(RuleAgent("krum"), env, 3)  # told f = ⌊beta·n⌋ = 2 by the simulator
    for info in infos:
        assert sorted(np.unique(info["credit"]).tolist()) == [0.0, 1.0]  # Krum: one-hot credit
        assert info["byzantine_credit"] == 0.0  # RF outliers are never the Krum pick
    infos = _play(RuleAgent("median"), env, 2)  # not a convex combination: no credit, still a policy
    assert all(info["credit"].sum() == 0.0 for info in infos)


def test_hyperparams_yaml_merges_default_and_env_entries(tmp_path):
    path = tmp_path / "ppo.yml"
    path.write_text("default: {n_steps: 8, gamma: 0.9}\nGAA-MNIST-v0: {n_steps: 16}\n")
    assert load_hyperparams("ppo", "GAA-MNIST-v0", path) == {"n_steps": 16, "gamma": 0.9}
    assert load_hyperparams("ppo", "Other-v0", path) == {"n_steps": 8, "gamma": 0.9}
    assert load_hyperparams("ppo", "GAA-MNIST-v0")["gamma"] == 0.9  # shipped file: paper's discount


@pytest.mark.parametrize("algo", ["ppo", "sac", "a2c", "td3", "ddpg", "recurrent_ppo"])
def test_every_sb3_algorithm_trains_and_deploys(algo):
    env = make()
    hyper = {k: v for k, v in load_hyperparams(algo, "GAA-MNIST-v0").items()
             if k not in ("learning_starts", "buffer_size")}
    if "n_steps" in hyper:
        hyper["n_steps"] = 8
    if "batch_size" in hyper:
        hyper["batch_size"] = 8
    model = make_sb3_model(algo, env, {**hyper, "learning_starts": 4} if algo in ("sac", "td3", "ddpg") else hyper,
                           seed=0)
    model.learn(16)
    env.reset(seed=1)
    agent = SB3Agent(algo, model)
    _, reward, _, _, info = agent.play(env.unwrapped)
    assert np.isfinite(reward) and info["credit"].sum() == pytest.approx(1.0, abs=1e-5)
