"""A Flower strategy that aggregates client updates with this package's robust rules or a GAA policy.

Flower (``flwr``, Message API, ``flwr.serverapp.strategy``) runs the federation; this module only
replaces the aggregation step of :class:`flwr.serverapp.strategy.FedAvg` by the server of the paper:

* every client ``i`` returns its locally trained parameters ``θ_i``; the server turns them into
  pseudo-gradients ``g_i = (θ − θ_i) / λ`` (``λ`` = ``lr``; with one local SGD step at
  learning rate ``λ`` this is exactly the client's mini-batch gradient, the setting of the paper
  and of :class:`gaa_env.envs.GAAEnv`), stacked in ``G[n, d]`` ordered by node id;
* the server evaluates ``f_B(θ)`` and ``∇f_B(θ)`` on its own small quasi-validation set
  ``(quasi_x, quasi_y)`` with the model's :class:`~gaa_env.models.FunctionalModel`;
* a rule of :data:`gaa_env.aggregators.AGGREGATORS` (``rule="krum"``, ...) or a trained GAA policy
  (``gaa_policy="runs/.../agent.pt"``) gives the update ``u`` (and the credit vector ``α`` for
  convex-combination rules and GAA), and the server steps ``θ ← θ − λ u`` — for a credit rule
  that is ``Σ α_i θ_i``, i.e. FedAvg with robust weights;
* the credit of each round is logged (Flower's logger), returned in the round's
  ``MetricRecord`` (``"credit"``, ordered by node id) and kept in :attr:`RobustStrategy.history`.

Install with ``pip install 'gaa-env[flower]'``. See ``docs/flower.md`` and
``examples/flower_mnist.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg
except ImportError as err:  # flwr missing, or a version without the Message API strategies (< 1.21)
    raise ImportError(
        "gaa_env.integrations.flower needs Flower >= 1.21 (the Message API, flwr.serverapp.strategy): "
        "pip install 'gaa-env[flower]'") from err
try:
    from flwr.supercore import log
except ImportError:  # older Flower releases keep the logger in flwr.common
    from flwr.common import log

from gaa_env.aggregators import AggregationContext, Aggregator, make_aggregator
from gaa_env.aggregators.base import finite_row_mask
from gaa_env.models import FunctionalModel

__all__ = ["RobustStrategy", "accuracy_evaluate_fn", "arrays_to_theta", "theta_to_arrays"]


# ------------------------------------------------------------------ ArrayRecord <-> flat θ


def arrays_to_theta(arrays: ArrayRecord, model: FunctionalModel) -> torch.Tensor:
    """Flatten an :class:`ArrayRecord` of the model's parameters into ``θ[d]`` (float32).

    Arrays are matched to the model's parameters by name (``ArrayRecord(module.state_dict())``);
    a record with other keys (e.g. ``from_numpy_ndarrays``) is read in its own order. Raises
    ``ValueError`` when the shapes do not fit the model.
    """
    state = arrays.to_torch_state_dict()
    if set(state) == set(model.names):
        tensors = [state[name] for name in model.names]
    else:
        tensors = list(state.values())
    shapes = [tuple(t.shape) for t in tensors]
    if shapes != [tuple(s) for s in model.shapes]:
        raise ValueError(f"arrays do not fit the model: got shapes {shapes}, expected "
                         f"{[tuple(s) for s in model.shapes]}")
    return torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])


def theta_to_arrays(theta: torch.Tensor, model: FunctionalModel) -> ArrayRecord:
    """The inverse of :func:`arrays_to_theta`: an ``ArrayRecord`` keyed by the model's parameter names."""
    return ArrayRecord({name: t.detach().clone() for name, t in model.unflatten(theta).items()})


def accuracy_evaluate_fn(model: FunctionalModel, x: torch.Tensor,
                         y: torch.Tensor) -> Callable[[int, ArrayRecord], MetricRecord]:
    """A centralized ``evaluate_fn`` for :meth:`Strategy.start`: test accuracy and loss of the global model."""

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        theta = arrays_to_theta(arrays, model)
        with torch.no_grad():
            loss = float(model.loss(theta, x, y))
        return MetricRecord({"accuracy": model.accuracy(theta, x, y), "loss": loss})

    return evaluate


# ------------------------------------------------------------------ the strategy


class RobustStrategy(FedAvg):
    """:class:`flwr.serverapp.strategy.FedAvg` whose aggregation is a robust rule or a GAA policy.

    Args:
        model: the federation's model, a :class:`FunctionalModel` or a parameter-only ``nn.Module``
            (no buffers); clients must send ``ArrayRecord(module.state_dict())`` of the same module.
        quasi_x, quasi_y: the server's quasi-validation set B (the paper: fewer than 10 samples).
        rule: a name of :data:`gaa_env.aggregators.AGGREGATORS` (``"krum"``, ``"median"``, ...) or an
            :class:`Aggregator` instance. Ignored when ``gaa_policy`` is given.
        rule_params: keyword hyperparameters of the named rule (e.g. ``{"strict": False}`` for Krum).
        gaa_policy: a trained GAA agent: a path saved by :meth:`agents.gaa.GAAAgent.save` (or
            ``train_agent.py``'s ``agent.pt``) or a :class:`~agents.gaa.GAAAgent`. Deployed frozen:
            α = h_ψ(state, α_prev), with the state built exactly as in the environment. A ``paper``
            policy needs exactly ``n_workers`` replies per round; an ``equivariant`` one takes any n.
        n_byzantine: ``f`` told to the rule; else ``⌊beta · n_replies⌋``.
        beta: assumed Byzantine fraction when ``n_byzantine`` is None (default 0).
        lr: the server learning rate λ (see the module docstring; use the clients' learning rate).
        **fedavg_kwargs: passed to :class:`FedAvg` (``fraction_train``, ``min_train_nodes``, ...).

    Rounds where the rule cannot run (e.g. Krum with fewer replies than its precondition needs
    after a client dropped out) or that would make θ non-finite keep θ unchanged and are logged
    (``history[k]["skipped"]``). Rows with NaN/Inf, or with shapes that do not fit, are absent:
    credit 0. Client-reported ``num-examples`` only weighs the averaged client metrics, never θ.
    """

    def __init__(self, model: FunctionalModel | nn.Module, quasi_x: torch.Tensor, quasi_y: torch.Tensor, *,
                 rule: str | Aggregator = "krum", rule_params: dict[str, Any] | None = None,
                 gaa_policy: str | Path | Any = None, n_byzantine: int | None = None, beta: float = 0.0,
                 lr: float = 0.05, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.model = model if isinstance(model, FunctionalModel) else FunctionalModel(model)
        if len(quasi_x) < 1 or len(quasi_x) != len(quasi_y):
            raise ValueError(f"quasi_x and quasi_y must be non-empty and of equal length, got "
                             f"{len(quasi_x)} and {len(quasi_y)}")
        self.quasi_x, self.quasi_y = quasi_x, quasi_y
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if n_byzantine is not None and (isinstance(n_byzantine, bool) or int(n_byzantine) != n_byzantine
                                        or n_byzantine < 0):
            raise ValueError(f"n_byzantine must be an integer >= 0 or None, got {n_byzantine!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.lr, self.n_byzantine, self.beta = float(lr), n_byzantine, float(beta)
        self.agent = _load_agent(gaa_policy) if gaa_policy is not None else None
        if self.agent is not None:
            self.aggregator: Aggregator | None = None
            self.rule_name = f"gaa-{self.agent.config.policy}"
            self.agent.policy.eval()
        else:
            self.aggregator = rule if isinstance(rule, Aggregator) else make_aggregator(rule, **(rule_params or {}))
            self.rule_name = self.aggregator.name
        self.history: list[dict[str, Any]] = []
        self.previous_update: torch.Tensor | None = None
        self._prev_credit: dict[int, float] = {}
        self._theta: torch.Tensor | None = None
        self._arrays_keys: list[str] | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> Robust aggregation (gaa-env): %s, f=%s, lr=%s, |B|=%d", self.rule_name,
            self.n_byzantine if self.n_byzantine is not None else f"floor({self.beta}*n)", self.lr,
            len(self.quasi_x))
        super().summary()

    # -------------------------------------------------------------- Flower hooks
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """As FedAvg, and remember the global θ the clients start from (the pseudo-gradients' origin)."""
        self.set_global_arrays(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def set_global_arrays(self, arrays: ArrayRecord) -> None:
        """Set θ (called by :meth:`configure_train`; call it yourself to aggregate replies by hand)."""
        self._theta = arrays_to_theta(arrays, self.model)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Robust aggregation of the clients' parameters; metrics averaged as FedAvg does, plus credit."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._theta is None:
            raise RuntimeError("RobustStrategy.aggregate_train: the global parameters are unknown; "
                               "configure_train (or set_global_arrays) must run first")
        valid = sorted(valid, key=lambda m: m.metadata.src_node_id)
        node_ids = [int(m.metadata.src_node_id) for m in valid]
        client_thetas = []
        for msg in valid:
            try:
                client_thetas.append(arrays_to_theta(msg.content[self.arrayrecord_key], self.model))
            except (ValueError, KeyError) as err:
                log(WARNING, "round %d: node %d sent unusable arrays (%s); treated as absent",
                    server_round, msg.metadata.src_node_id, err)
                client_thetas.append(torch.full_like(self._theta, float("nan")))
        outcome = self.aggregate_thetas(server_round, node_ids, torch.stack(client_thetas))
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        metrics["quasi-loss"] = outcome["quasi_loss_before"]
        metrics["quasi-loss-after"] = outcome["quasi_loss_after"]
        metrics["skipped"] = int(outcome["skipped"] is not None)
        if outcome["credit"] is not None:
            metrics["credit"] = [float(c) for c in outcome["credit"]]
        self.history[-1]["client_metrics"] = {
            nid: {k: v for record in m.content.metric_records.values() for k, v in record.items()}
            for nid, m in zip(node_ids, valid)}
        if outcome["skipped"] is not None:
            return None, metrics
        return theta_to_arrays(self._theta, self.model), metrics

    # -------------------------------------------------------------- the server of the paper
    def aggregate_thetas(self, server_round: int, node_ids: list[int],
                         client_thetas: torch.Tensor) -> dict[str, Any]:
        """Aggregate clients' parameters ``[n, d]`` at the current θ; updates θ and appends to :attr:`history`.

        Framework-free core of :meth:`aggregate_train` (usable with any transport).
        """
        assert self._theta is not None, "set_global_arrays first"
        theta, lr, model = self._theta, self.lr, self.model
        grads = (theta.unsqueeze(0) - client_thetas.to(theta.dtype)) / lr
        finite = finite_row_mask(grads)
        grads = torch.where(finite.unsqueeze(1), grads, torch.zeros((), dtype=grads.dtype))
        n = grads.shape[0]
        f = self.n_byzantine if self.n_byzantine is not None else int(self.beta * n)
        theta_req = theta.detach().requires_grad_(True)
        loss = model.loss(theta_req, self.quasi_x, self.quasi_y)
        (quasi_grad,) = torch.autograd.grad(loss, theta_req)
        quasi_loss = float(loss.detach())
        skipped: str | None = None
        credit: torch.Tensor | None = None
        update = torch.zeros_like(theta)
        try:
            if self.agent is not None:
                credit = self._gaa_credit(node_ids, grads, finite, quasi_grad, quasi_loss)
                if float(credit.sum()) > 0:
                    update = credit @ grads
                else:
                    skipped = "no client has credit left"
            elif bool(finite.any()):
                ctx = AggregationContext(
                    n_byzantine=f, quasi_grad=quasi_grad, previous_update=self.previous_update,
                    quasi_loss=quasi_loss, lr=lr,
                    quasi_loss_after_step=lambda u: model.losses_after_steps(theta, u, lr, self.quasi_x,
                                                                             self.quasi_y))
                with torch.no_grad():
                    result = self.aggregator(grads[finite], ctx)
                update = result.update
                if result.credit is not None:
                    credit = torch.zeros(n, dtype=result.credit.dtype)
                    credit[finite] = result.credit
            else:
                skipped = "no finite client update"
        except ValueError as err:  # e.g. Krum's n >= 2f+3 after clients dropped out
            skipped = f"{self.rule_name} cannot aggregate {int(finite.sum())} updates with f={f}: {err}"
        new_theta = theta - lr * update.detach().to(theta.dtype)
        if skipped is None and not bool(torch.isfinite(new_theta).all()):
            skipped = "the aggregated update is not finite"
        if skipped is None:
            self._theta = new_theta
            self.previous_update = update.detach()
        with torch.no_grad():
            after = float(model.loss(self._theta, self.quasi_x, self.quasi_y))
        if credit is not None:
            credit = credit.detach().float()
            self._prev_credit = {nid: float(c) for nid, c in zip(node_ids, credit)}
        record = {"round": server_round, "rule": self.rule_name, "node_ids": list(node_ids),
                  "credit": None if credit is None else credit.tolist(), "n_byzantine": f,
                  "absent": [nid for nid, ok in zip(node_ids, finite.tolist()) if not ok],
                  "quasi_loss_before": quasi_loss, "quasi_loss_after": after, "skipped": skipped}
        self.history.append(record)
        if skipped is not None:
            log(ERROR, "round %d: %s; global model kept", server_round, skipped)
        if credit is not None:
            shown = ", ".join(f"{nid}:{c:.3f}" for nid, c in zip(node_ids, credit.tolist()))
        else:
            shown = "none (round skipped)" if skipped is not None else "none (rule is not a convex combination)"
        log(INFO, "round %d [%s] credit {node: alpha}: %s | f_B %.4f -> %.4f", server_round, self.rule_name,
            shown, quasi_loss, after)
        return record

    def _gaa_credit(self, node_ids: list[int], grads: torch.Tensor, finite: torch.Tensor,
                    quasi_grad: torch.Tensor, quasi_loss: float) -> torch.Tensor:
        from gaa_env.observations import feature_observation, paper_column_means
        from gaa_env.simulator import RoundGradients

        agent, n = self.agent, len(node_ids)
        if agent.config.policy == "paper" and n != agent.n_workers:
            raise ValueError(f"the paper GAA policy was trained for {agent.n_workers} workers, got {n} replies "
                             "(use an equivariant policy for a varying number of clients)")
        prev = torch.tensor([self._prev_credit.get(nid, 1.0 / n) for nid in node_ids], dtype=torch.float32)
        prev = prev / prev.sum() if float(prev.sum()) > 0 else torch.full((n,), 1.0 / n)
        current = RoundGradients(received=grads, byzantine=torch.zeros(n, dtype=torch.bool), finite=finite,
                                 quasi_grad=quasi_grad, quasi_loss=quasi_loss)
        with torch.no_grad():
            if agent.config.policy == "paper":
                state = paper_column_means(current, self._theta, prev)
            else:
                state = feature_observation(current, self.model, self._theta, self.lr, self.quasi_x, self.quasi_y,
                                            prev, self.previous_update)
            alpha = agent.policy(state).float()
        alpha = torch.where(finite, alpha, torch.zeros(()))
        total = float(alpha.sum())
        return alpha / total if total > 0 and math.isfinite(total) else torch.zeros(n)


def _load_agent(policy: str | Path | Any) -> Any:
    from agents.gaa import GAAAgent

    if isinstance(policy, GAAAgent):
        return policy
    if isinstance(policy, (str, Path)):
        return GAAAgent.load(policy)
    raise ValueError(f"gaa_policy must be a path to a saved GAAAgent or a GAAAgent, got {type(policy).__name__}")
