"""The paper's Gradient Aggregation Agent (GAA), trained online as in Algorithm 1.

Reads top to bottom like Algorithm 1 (see ``docs/gaa.md`` for every decision):

* the policy ``h_ψ(s_t, α_{t-1}) → α_t ∈ S_n`` — ``policy="paper"``: one linear layer (3n+2 → n)
  shared by the d per-coordinate rows of the state, averaged over rows, softmax (Sec 5.1.4);
  ``policy="equivariant"`` (an improvement, not in the paper): one small scorer shared by all
  workers over each worker's own features, softmax across workers;
* episodes of ``T = horizon`` rounds inside ONE learning process; in each, θ_{t+1} =
  θ_t − λ Σ α_t^i g_t^i keeps its graph to α_t, and the objective
  ``J = Σ_t γ^t (f_B(θ_{t+1}) − f_B(θ_t))`` is minimised by backpropagation through the T-step
  unroll (Adam, element-wise gradient clamp to [−1, 1] as in the authors' code);
* α_0 of an episode inherits the last α of the previous one (α_0 = uniform at the start);
* after ``train_episodes`` episodes ψ is frozen and the policy is deployed (``None``: keeps adapting).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gaa_env.envs import GAAEnv
from gaa_env.observations import FEATURE_NAMES, feature_observation, paper_column_means
from gaa_env.simulator import RoundGradients

POLICIES = ("paper", "equivariant")


class PaperPolicy(nn.Module):
    """``α = softmax(mean_k(W x_k + b))`` over the rows ``x_k`` of the ``[d, 3n+2]`` state.

    Parameters: ``(3n+2)·n + n`` (7,650 for n = 50). By linearity the row mean can be taken before
    the layer, so :meth:`forward` takes the column means ``[3n+2]``; :meth:`forward_rows` applies the
    layer literally to the full matrix (used to test the two agree).
    """

    def __init__(self, n_workers: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * n_workers + 2, n_workers)

    def forward(self, column_means: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(column_means), dim=-1)

    def forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(rows).mean(dim=0), dim=-1)


class EquivariantPolicy(nn.Module):
    """A scorer shared by all workers over their own features, softmax across workers.

    Permuting workers permutes α, and the parameter count does not grow with n.
    """

    def __init__(self, n_features: int = len(FEATURE_NAMES), hidden: int = 16) -> None:
        super().__init__()
        self.scorer = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scorer(features).squeeze(-1), dim=-1)


@dataclass
class GAAConfigAgent:
    """Hyperparameters of :class:`GAAAgent` (paper values where the paper gives them)."""

    policy: str = "paper"
    gamma: float = 0.9
    learning_rate: float = 1e-2
    grad_clamp: float = 1.0
    train_episodes: int | None = None
    hidden: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown GAA policy {self.policy!r}; allowed: {list(POLICIES)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.train_episodes is not None and self.train_episodes < 0:
            raise ValueError(f"train_episodes must be >= 0 or None (adapt forever), got {self.train_episodes}")


class GAAAgent:
    """Online GAA over a :class:`~gaa_env.envs.GAAEnv` (uses its simulator's differentiable step)."""

    name = "gaa"

    def __init__(self, n_workers: int, **hyperparams: Any) -> None:
        self.config = GAAConfigAgent(**hyperparams)
        self.n_workers = n_workers
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            if self.config.policy == "paper":
                self.policy: nn.Module = PaperPolicy(n_workers)
            else:
                self.policy = EquivariantPolicy(hidden=self.config.hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate)
        self.episodes_trained = 0
        self._reset_window()

    # ------------------------------------------------------------ Algorithm 1
    def _reset_window(self) -> None:
        self._theta: torch.Tensor | None = None  # θ_t with its graph to this episode's α's
        self._objective: torch.Tensor | None = None
        self._t = 0
        self._alpha_prev: torch.Tensor | None = None

    @property
    def training(self) -> bool:
        return self.config.train_episodes is None or self.episodes_trained < self.config.train_episodes

    def credit(self, env: GAAEnv) -> torch.Tensor:
        """α_t = h_ψ(s_t, α_{t−1}) for the round the env is waiting on (graph kept while training)."""
        sim, current = env.simulator, env.simulator.current
        assert current is not None, "reset the env first"
        prev = self._alpha_prev if self._alpha_prev is not None else env.credit.float()
        state = self._state(env, current, prev.detach())
        with torch.set_grad_enabled(self.training):
            alpha = self.policy(state)
        return sim.sanitize_credit(alpha)

    def _state(self, env: GAAEnv, current: RoundGradients, prev: torch.Tensor) -> torch.Tensor:
        sim = env.simulator
        if self.config.policy == "paper":
            return paper_column_means(current, sim.theta, prev)
        return feature_observation(current, sim.model, sim.theta, sim.lr, sim.quasi_x, sim.quasi_y, prev,
                                   sim.previous_update)

    def play(self, env: GAAEnv) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One round: choose α_t, step the env with it, and learn at the end of each T-round episode."""
        sim = env.simulator
        alpha = self.credit(env)
        if self.training:
            theta = self._theta if self._theta is not None else sim.theta.detach()
            loss_before = sim.quasi_loss(theta)
            theta_next = sim.next_theta(theta, alpha)
            term = self.config.gamma ** self._t * (sim.quasi_loss(theta_next) - loss_before)
            self._objective = term if self._objective is None else self._objective + term
            self._theta = theta_next
        result = env.step_with_credit(alpha.detach())
        self._alpha_prev = alpha
        self._t += 1
        if result[3]:  # truncated: the T-round episode is over
            self._end_episode()
        return result

    def _end_episode(self) -> None:
        if self.training and self._objective is not None and self._objective.requires_grad:
            self.optimizer.zero_grad()
            self._objective.backward()
            for p in self.policy.parameters():
                if p.grad is not None:
                    p.grad.clamp_(-self.config.grad_clamp, self.config.grad_clamp)
            self.optimizer.step()
            self.episodes_trained += 1
        last = self._alpha_prev.detach() if self._alpha_prev is not None else None
        self._reset_window()
        self._alpha_prev = last  # α_0 of the next episode inherits α_T of this one

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "n_workers": self.n_workers, "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "episodes_trained": self.episodes_trained,
                "alpha_prev": self._alpha_prev.detach() if self._alpha_prev is not None else None}

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename): a crash never leaves a half-written checkpoint."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> GAAAgent:
        agent = cls(state["n_workers"], **state["config"])
        agent.policy.load_state_dict(state["policy"])
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.episodes_trained = state["episodes_trained"]
        agent._alpha_prev = state["alpha_prev"]
        return agent

    @classmethod
    def load(cls, path: str | Path) -> GAAAgent:
        return cls.from_state_dict(torch.load(path, weights_only=False))
