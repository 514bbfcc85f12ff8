"""The Gymnasium environment: one step = one round of Byzantine-robust distributed SGD."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from gaa_env.aggregators import Aggregator
from gaa_env.aggregators.detection import detection_scores, gaa_plus
from gaa_env.attacks import make_pattern, make_tampering
from gaa_env.data import Dataset, load_dataset
from gaa_env.envs.config import BENCHMARKS, GAAConfig
from gaa_env.models import FunctionalModel, make_model
from gaa_env.observations import (
    FEATURE_HIGH,
    FEATURE_LOW,
    FEATURE_NAMES,
    feature_observation,
    paper_bounds,
    paper_observation,
)
from gaa_env.simulator import DistributedSGD, RoundGradients, StepOutcome


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, data_dir: str | None, normalize: bool) -> Dataset:
    return load_dataset(name, data_dir=data_dir, normalize=normalize)


class GAAEnv(gym.Env):
    """Choose the credit vector of a parameter server under Byzantine attack.

    ## Description
    A server trains a model with ``n`` workers, ``⌊beta·n⌋`` of them compromised. Each round every
    worker sends a mini-batch gradient (Byzantine ones send tampered vectors following the attack
    pattern); the agent weights them with a credit vector α ∈ S_n and the server steps
    ``θ ← θ − λ Σ α_i g_i`` (Pan et al., "Justinian's GAAvernor", USENIX Security 2020).

    ## Action Space
    ``Box(-1, 1, (n,))`` with ``action_mode="logits"``: α = softmax(``logit_scale`` · action).
    ``Box(0, 1, (n,))`` with ``action_mode="simplex"``: a non-negative credit vector, renormalised to
    sum 1. ``Box(-1, 1, (7,))`` with ``action_mode="feature_weights"``: the weights w of one linear
    scorer shared by all workers, α = softmax(``logit_scale`` · Z w) with Z the round's per-worker
    features (Observation Space, features) standardised over workers — a 7-dimensional,
    permutation-equivariant action that SB3 agents learn far more easily than n logits.
    A wrong shape, NaN/Inf or (simplex) a negative entry or an all-zero vector raises ValueError.

    ## Observation Space
    ``obs_mode="features"``: ``Box(low, high, (n, 7), float32)``, one row per worker:

    | col | feature | range |
    |-----|---------|-------|
    | 0 | cos(g_i, ∇f_B(θ)) | [-1, 1] |
    | 1 | log(‖g_i‖ / ‖∇f_B(θ)‖) | [-20, 20] |
    | 2 | (f_B(θ) − f_B(θ − λ g_i)) / f_B(θ) | [-1e3, 1e3] |
    | 3 | cos(g_i, mean of received) | [-1, 1] |
    | 4 | cos(g_i, previous update) | [-1, 1] |
    | 5 | previous credit α_{t-1,i} | [0, 1] |
    | 6 | f_B(θ) | [0, 1e6] |

    ``obs_mode="paper"``: ``Box(low, high, (d, 3n+2), float32)`` (bounds per column), one row per model coordinate k:
    columns ``2i, 2i+1`` = log-magnitude/sign preprocessing of ``g_i[k]``; ``2n`` = θ[k];
    ``2n+1`` = f_B(θ); ``2n+2 … 3n+1`` = α_{t-1}. (d = 25,450 for MNIST: 3.9 M floats per step.)

    ## Rewards
    ``f_B(θ_t) − f_B(θ_{t+1})``: the drop of the loss on the quasi-validation set B.

    ## Starting State
    ``reset(seed=s)`` starts a fresh learning process from seed s (θ_0, compromised workers, B,
    partition). With ``persistent=True``, ``reset()`` without a seed continues the same process (the
    paper's online setting: the previous credit is inherited) until ``max_rounds`` is reached.

    ## Episode End
    Truncated after ``horizon`` rounds (T = 5 in the paper) or when the process reaches
    ``max_rounds``. There is no terminal state.

    ## Arguments
    See :class:`~gaa_env.envs.config.GAAConfig` and the README table: ``beta`` (0.5), ``attack``
    (static | pretense | randomized | periodic | none), ``tampering`` (rf | af | gaussian | sign_flip | alie | ipm |
    min_max | min_sum | mimic | label_flip | inf | nan),
    ``attack_params``/``tampering_params`` (dicts), ``n_workers`` (50), ``lr`` (0.05), ``batch_size`` (64),
    ``quasi_size`` (8), ``horizon`` (5), ``max_rounds`` (5000), ``persistent`` (True), ``obs_mode``
    (features), ``action_mode`` (logits), ``logit_scale`` (10), ``partition`` (shared), ``dirichlet_alpha``,
    ``grad_clip`` (none), ``eval_interval`` (100), ``test_size`` (all), ``normalize`` (False),
    ``data_dir``, ``data`` (real | synthetic: the labeled stand-in of :mod:`gaa_env.data.synthetic`), ``seed`` (0).

    ## Info
    ``round``, ``byzantine_mask`` (ground truth for the round just played), ``compromised_mask``,
    ``credit``, ``byzantine_credit`` (credit mass on Byzantine workers), ``quasi_loss``,
    ``test_accuracy`` and ``test_accuracy_round`` (latest evaluation), ``nonfinite_workers``,
    ``update_rejected``, ``detection_precision``/``detection_recall`` (GAA+ with K = #Byzantine),
    ``dataset`` (its name; ``*-synthetic`` for stand-ins) and ``synthetic`` (bool).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.config = GAAConfig.from_kwargs(**kwargs)
        cfg = self.config
        preset = BENCHMARKS[cfg.benchmark]
        name = preset.dataset if cfg.data == "real" else f"{preset.dataset}-synthetic"
        dataset = _cached_dataset(name, cfg.data_dir, cfg.normalize)
        self.simulator = DistributedSGD(
            dataset, FunctionalModel(make_model(preset.model), worker_chunk=preset.worker_chunk),
            pattern=make_pattern(cfg.attack, **cfg.attack_params),
            tampering=make_tampering(cfg.tampering, **cfg.tampering_params),
            n_workers=cfg.n_workers, beta=cfg.beta, lr=cfg.lr, batch_size=cfg.batch_size,
            quasi_size=cfg.quasi_size, partition=cfg.partition, dirichlet_alpha=cfg.dirichlet_alpha,
            grad_clip=cfg.grad_clip, eval_interval=cfg.eval_interval, test_size=cfg.test_size, seed=cfg.seed)
        n, d = cfg.n_workers, self.simulator.dim
        if cfg.obs_mode == "features":
            low, high = np.tile(FEATURE_LOW, (n, 1)), np.tile(FEATURE_HIGH, (n, 1))
        else:
            low, high = paper_bounds(n, d)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        if cfg.action_mode == "feature_weights":
            self.action_space = spaces.Box(-1.0, 1.0, shape=(len(FEATURE_NAMES),), dtype=np.float32)
        else:
            low = -1.0 if cfg.action_mode == "logits" else 0.0
            self.action_space = spaces.Box(low, 1.0, shape=(n,), dtype=np.float32)
        self._started = False
        self._episode_round = 0

    # ----------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        sim, cfg = self.simulator, self.config
        if seed is None and not self._started:
            seed = cfg.seed
        super().reset(seed=seed)
        if seed is not None or not cfg.persistent or sim.round_index >= cfg.max_rounds:
            run_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            sim.reset(run_seed)
            self.credit = torch.full((cfg.n_workers,), 1.0 / cfg.n_workers)
            self._started = True
        self._episode_round = 0
        if sim.current is None:
            sim.gather()
        return self._observation(), self._info(None)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        credit = self.action_to_credit(action)
        return self._advance(lambda sim: sim.step(credit))

    def step_with_credit(self, credit: torch.Tensor) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play one round with a credit vector given directly on the simplex (no action mapping).

        For server-side agents such as GAA that produce α themselves, whatever ``action_mode`` is.
        """
        return self._advance(lambda sim: sim.step(credit))

    def step_with_rule(self, aggregator: Aggregator) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play one round with a classic aggregation rule instead of an action (rules as fixed policies).

        Works for every rule, also those that are not convex combinations (median, Bulyan, ...):
        their ``credit`` in ``info`` is then all zeros and detection scores are those of GAA+ on it.
        """
        return self._advance(lambda sim: sim.step_with(aggregator))

    def _advance(self, play: Callable[[DistributedSGD], StepOutcome]
                 ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        sim = self.simulator
        played = sim.current
        assert played is not None
        outcome = play(sim)
        if outcome.credit is not None and float(outcome.credit.sum()) > 0:
            self.credit = outcome.credit.float()
        self._episode_round += 1
        sim.gather()
        reward = outcome.quasi_loss_before - outcome.quasi_loss_after
        truncated = self._episode_round >= self.config.horizon or sim.round_index >= self.config.max_rounds
        return self._observation(), float(reward), False, truncated, self._info(outcome, played)

    def action_to_credit(self, action: np.ndarray) -> torch.Tensor:
        """Validate an action and map it onto the simplex S_n (see Action Space)."""
        n, mode = self.config.n_workers, self.config.action_mode
        array = np.asarray(action, dtype=np.float64)
        expected = (len(FEATURE_NAMES),) if mode == "feature_weights" else (n,)
        what = "one weight per feature" if mode == "feature_weights" else "one entry per worker"
        if array.shape != expected:
            raise ValueError(f"action must have shape {expected} ({what}), got {array.shape}")
        if not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array)).tolist()
            raise ValueError(f"action has NaN/Inf entries at {bad}; all {expected[0]} entries must be finite")
        values = torch.as_tensor(array)
        if mode == "logits":
            return torch.softmax(self.config.logit_scale * values.clamp(-1.0, 1.0), dim=0).float()
        if mode == "feature_weights":
            return self._scored_credit(values.clamp(-1.0, 1.0))
        if (values < 0).any():
            bad = np.flatnonzero(array < 0).tolist()
            raise ValueError(f"simplex action has negative credit at workers {bad}; credits must be >= 0")
        if float(values.sum()) <= 0:
            raise ValueError("simplex action is all zeros; at least one credit must be > 0")
        return (values / values.sum()).float()

    def state_dict(self) -> dict[str, Any]:
        """The learning process and episode position, for checkpoints (see :meth:`load_state_dict`)."""
        return {"simulator": self.simulator.state_dict(), "credit": self.credit, "started": self._started,
                "episode_round": self._episode_round, "config": self.config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config:
            raise ValueError("checkpoint was made with another environment configuration: "
                             f"{state['config']} != {self.config}")
        self.simulator.load_state_dict(state["simulator"])
        self.credit, self._started, self._episode_round = state["credit"], state["started"], state["episode_round"]

    def current_observation(self) -> np.ndarray:
        """The observation of the round the server is waiting on (what the last reset/step returned)."""
        return self._observation()

    # ------------------------------------------------------------ helpers
    def _scored_credit(self, weights: torch.Tensor) -> torch.Tensor:
        """α = softmax(logit_scale · Z w): Z = this round's per-worker features standardised over
        workers, w = the action — one linear scorer shared by all workers (permutation-equivariant)."""
        features = self._features().double()
        z = (features - features.mean(0)) / features.std(0, unbiased=False).clamp_min(1e-6)
        return torch.softmax(self.config.logit_scale * (z @ weights), dim=0).float()

    def _features(self) -> torch.Tensor:
        """This round's per-worker features, computed once per round (observation and scorer share them)."""
        sim = self.simulator
        assert sim.current is not None
        cached = getattr(self, "_features_cache", None)
        if cached is None or cached[0] is not sim.current:
            features = feature_observation(sim.current, sim.model, sim.theta, sim.lr, sim.quasi_x, sim.quasi_y,
                                           self.credit, sim.previous_update)
            self._features_cache = (sim.current, features)
        return self._features_cache[1]

    def _observation(self) -> np.ndarray:
        sim = self.simulator
        assert sim.current is not None
        if self.config.obs_mode == "paper":
            return paper_observation(sim.current, sim.theta, self.credit).numpy()
        return self._features().numpy().copy()

    def _info(self, outcome: StepOutcome | None, played: RoundGradients | None = None) -> dict[str, Any]:
        sim = self.simulator
        info: dict[str, Any] = {
            "round": sim.round_index,
            "compromised_mask": sim.compromised.numpy().copy(),
            "test_accuracy": sim.test_accuracy,
            "test_accuracy_round": sim.test_accuracy_round,
            "quasi_loss": sim.current.quasi_loss if sim.current is not None else None,
            "dataset": sim.dataset.name, "synthetic": sim.dataset.synthetic,
        }
        if outcome is None or played is None:
            return info
        byzantine = played.byzantine
        credit = outcome.credit if outcome.credit is not None else torch.zeros(self.config.n_workers)
        flagged = gaa_plus(credit, int(byzantine.sum()))
        scores = detection_scores(flagged, byzantine)
        info.update({
            "byzantine_mask": byzantine.numpy().copy(),
            "credit": credit.numpy().copy(),
            "byzantine_credit": float(credit[byzantine].sum()),
            "quasi_loss": outcome.quasi_loss_after,
            "nonfinite_workers": int((~played.finite).sum()),
            "update_rejected": outcome.rejected,
            "detection_precision": scores["precision"],
            "detection_recall": scores["recall"],
        })
        return info
