"""Parameter-server distributed SGD with Byzantine workers, computed in one process.

One round, as the server sees it:

1. every worker draws a mini-batch from its partition and computes its gradient at θ — all ``n``
   gradients in **one** ``vmap(grad(loss))`` call;
2. the attack pattern says which compromised workers are Byzantine this round, and the tampering
   replaces their rows (omniscient attacks read the honest rows);
3. the server sanitises what it received (rows with NaN/Inf are marked absent and zeroed) and
   optionally rescales magnitudes (``grad_clip``);
4. a credit vector α ∈ S_n (from an agent) or an aggregation rule turns the rows into an update,
   and ``θ ← θ − λ · update``.

Non-finite input never reaches θ: absent rows get credit 0 and the credit is renormalised over the
rest; an update that would make θ non-finite is rejected (θ unchanged, ``rejected=True``).
See ``docs/simulator.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gaa_env.aggregators import AggregationContext, AggregationResult, Aggregator
from gaa_env.aggregators.base import finite_row_mask
from gaa_env.attacks import AttackPattern, TamperContext, Tampering
from gaa_env.data import Dataset, make_partition, sample_quasi_set
from gaa_env.models import FunctionalModel

GRAD_CLIPS = ("none", "quasi_norm", "median_norm")


@dataclass(frozen=True)
class RoundGradients:
    """What the server received in one round.

    Attributes:
        received: ``[n, d]`` gradients after tampering and sanitising (absent rows are zero).
        byzantine: ``[n]`` ground truth — the workers that sent tampered gradients this round.
        finite: ``[n]`` False for rows that arrived with NaN/Inf (treated as absent).
        quasi_grad: ``∇f_B(θ)`` on the quasi-validation set ``[d]``.
        quasi_loss: ``f_B(θ)``.
    """

    received: torch.Tensor
    byzantine: torch.Tensor
    finite: torch.Tensor
    quasi_grad: torch.Tensor
    quasi_loss: float


@dataclass(frozen=True)
class StepOutcome:
    """Result of applying one update: the credit actually used and ``f_B`` before/after."""

    credit: torch.Tensor | None
    update: torch.Tensor
    quasi_loss_before: float
    quasi_loss_after: float
    rejected: bool


class DistributedSGD:
    """θ on a server, ``n_workers`` workers of which ``⌊beta·n⌋`` are compromised.

    Args:
        dataset: training/test data (see :mod:`gaa_env.data`).
        model: the functional view of the benchmark model.
        pattern: who attacks when; tampering: what they send.
        n_workers, beta, lr (λ), batch_size, quasi_size (|B|): as in the paper.
        partition: ``shared`` | ``dirichlet`` | ``by_group``; dirichlet_alpha for ``dirichlet``.
        grad_clip: ``none`` (paper) | ``quasi_norm`` (rescale every row whose norm exceeds
            ``‖∇f_B(θ)‖`` down to it) | ``median_norm`` (same with the median received norm).
        eval_interval: rounds between test-accuracy evaluations (0: only on demand).
        test_size: evaluate on the first ``test_size`` test samples (None: all).
        seed: default seed of :meth:`reset`.
        gradient_backend: None (default) computes the honest rows here; else a callable
            ``(θ, idx[n, b]) -> G[n, d]`` (or an object with ``honest_gradients``) that computes them
            elsewhere — see :mod:`gaa_env.distributed` and ``docs/distributed.md``.
    """

    def __init__(self, dataset: Dataset, model: FunctionalModel, *, pattern: AttackPattern,
                 tampering: Tampering, n_workers: int = 50, beta: float = 0.0, lr: float = 0.05,
                 batch_size: int = 64, quasi_size: int = 8, partition: str = "shared",
                 dirichlet_alpha: float = 0.5, grad_clip: str = "none", eval_interval: int = 100,
                 test_size: int | None = None, seed: int = 0, gradient_backend: Any = None) -> None:
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if grad_clip not in GRAD_CLIPS:
            raise ValueError(f"unknown grad_clip {grad_clip!r}; allowed: {list(GRAD_CLIPS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.dataset, self.model = dataset, model
        self.pattern, self.tampering = pattern, tampering
        self.n_workers, self.beta, self.lr = n_workers, beta, lr
        self.batch_size, self.quasi_size = batch_size, quasi_size
        self.partition_kind, self.dirichlet_alpha = partition, dirichlet_alpha
        self.grad_clip, self.eval_interval = grad_clip, eval_interval
        self.n_byzantine = int(beta * n_workers)
        self.test_x = dataset.x_test[:test_size] if test_size else dataset.x_test
        self.test_y = dataset.y_test[:test_size] if test_size else dataset.y_test
        self.seed = seed
        self.gradient_backend = gradient_backend
        self.reset(seed)

    # ------------------------------------------------------------------ state
    def reset(self, seed: int | None = None) -> None:
        """Start a fresh learning process: θ_0, compromised set, partition, B — all from ``seed``."""
        self.seed = self.seed if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for module in self.model.module.modules():
                if module is not self.model.module and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            self.theta = self.model.initial_theta()
        self.partition = make_partition(self.partition_kind, self.dataset.y_train, self.n_workers,
                                        generator=self.generator, dirichlet_alpha=self.dirichlet_alpha,
                                        groups=self.dataset.groups)
        quasi = sample_quasi_set(len(self.dataset.quasi_pool[1]), self.quasi_size, self.generator)
        self.quasi_x, self.quasi_y = (pool[quasi] for pool in self.dataset.quasi_pool)
        order = torch.randperm(self.n_workers, generator=self.generator)
        self.compromised = torch.zeros(self.n_workers, dtype=torch.bool)
        self.compromised[order[: self.n_byzantine]] = True
        self.pattern.reset(self.compromised, self.generator)
        self.round_index = 0
        self.previous_update: torch.Tensor | None = None
        self.test_accuracy: float | None = None
        self.test_accuracy_round: int | None = None
        self.current: RoundGradients | None = None

    @property
    def dim(self) -> int:
        return self.model.dim

    # --------------------------------------------------------------- a round
    def quasi_loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """``f_B(θ)`` on the quasi-validation set; differentiable in ``theta``."""
        return self.model.loss(self.theta if theta is None else theta, self.quasi_x, self.quasi_y)

    def gather(self) -> RoundGradients:
        """Run one round's worker side at the current θ and return what the server received."""
        idx = self.partition.sample(self.batch_size, self.generator)
        x, y = self.dataset.x_train[idx], self.dataset.y_train[idx]
        byzantine = self.pattern.active(self.round_index)
        ctx = TamperContext(theta=self.theta, generator=self.generator, lr=self.lr, round_index=self.round_index,
                            model=self.model, batch_x=x, batch_y=y, quasi_x=self.quasi_x, quasi_y=self.quasi_y,
                            n_classes=self.dataset.n_classes)
        if bool(byzantine.any()):
            x, y = self.tampering.poison_batch(x, y, byzantine, ctx)
        if self.gradient_backend is None:
            honest = self.model.worker_gradients(self.theta, x, y)
            received = self.tampering(honest, byzantine, ctx)
        else:  # honest rows from worker processes; poisoning/forging stay here (docs/distributed.md)
            from gaa_env.distributed.round import remote_round
            received = remote_round(self, idx, x, y, byzantine, ctx)
        finite = finite_row_mask(received)
        if not bool(finite.all()):
            received = torch.where(finite.unsqueeze(1), received, torch.zeros((), dtype=received.dtype))
        theta = self.theta.detach().requires_grad_(True)
        loss = self.quasi_loss(theta)
        (quasi_grad,) = torch.autograd.grad(loss, theta)
        received = self._clip(received, quasi_grad, finite)
        self.current = RoundGradients(received=received, byzantine=byzantine, finite=finite,
                                      quasi_grad=quasi_grad, quasi_loss=float(loss.detach()))
        return self.current

    def _clip(self, received: torch.Tensor, quasi_grad: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
        if self.grad_clip == "none":
            return received
        norms = received.norm(dim=1)
        if self.grad_clip == "quasi_norm":
            bound = quasi_grad.norm()
        else:
            bound = norms[finite].median() if bool(finite.any()) else norms.new_zeros(())
        scale = torch.where(norms > bound, bound / norms.clamp_min(1e-30), torch.ones_like(norms))
        return received * scale.unsqueeze(1)

    def sanitize_credit(self, credit: torch.Tensor) -> torch.Tensor:
        """Zero the credit of absent (non-finite) rows and renormalise onto the simplex.

        Returns all zeros when no credit is left (the server then skips the update).
        """
        assert self.current is not None, "call gather() first"
        credit = torch.where(self.current.finite, credit, torch.zeros((), dtype=credit.dtype))
        total = credit.sum()
        return credit / total if float(total.detach()) > 0 else credit * 0.0

    def next_theta(self, theta: torch.Tensor, credit: torch.Tensor) -> torch.Tensor:
        """``θ − λ Σ α_i G_i`` for the received rows; differentiable in ``theta`` and ``credit``."""
        assert self.current is not None, "call gather() first"
        return theta - self.lr * (credit.to(self.current.received.dtype) @ self.current.received)

    def step(self, credit: torch.Tensor) -> StepOutcome:
        """Apply a credit vector α ∈ S_n (sanitised, see :meth:`sanitize_credit`) and advance a round."""
        credit = self.sanitize_credit(credit.detach().to(torch.float32))
        assert self.current is not None
        return self._apply(credit @ self.current.received, credit)

    def aggregate(self, aggregator: Aggregator) -> AggregationResult:
        """Run a rule on this round's received rows (absent rows removed, their credit 0)."""
        current = self.current
        assert current is not None, "call gather() first"
        keep = current.finite
        rows = current.received[keep]
        ctx = AggregationContext(
            n_byzantine=self.n_byzantine, quasi_grad=current.quasi_grad, previous_update=self.previous_update,
            quasi_loss=current.quasi_loss, lr=self.lr,
            quasi_loss_after_step=lambda updates: self.model.losses_after_steps(
                self.theta, updates, self.lr, self.quasi_x, self.quasi_y))
        if rows.shape[0] == 0:
            return AggregationResult(update=torch.zeros(self.dim), credit=torch.zeros(self.n_workers))
        result = aggregator(rows, ctx)
        credit = None
        if result.credit is not None:
            credit = torch.zeros(self.n_workers, dtype=result.credit.dtype)
            credit[keep] = result.credit
        return AggregationResult(update=result.update, credit=credit)

    def step_with(self, aggregator: Aggregator) -> StepOutcome:
        """Aggregate this round's rows with ``aggregator`` and apply the update."""
        result = self.aggregate(aggregator)
        return self._apply(result.update, result.credit)

    def _apply(self, update: torch.Tensor, credit: torch.Tensor | None) -> StepOutcome:
        assert self.current is not None
        before = self.current.quasi_loss
        new_theta = self.theta - self.lr * update
        rejected = not bool(torch.isfinite(new_theta).all())
        if not rejected:
            self.theta = new_theta.detach()
            self.previous_update = update.detach()
        with torch.no_grad():
            after = float(self.quasi_loss())
        self.round_index += 1
        self.current = None
        if self.eval_interval and self.round_index % self.eval_interval == 0:
            self.evaluate()
        return StepOutcome(credit=credit, update=update, quasi_loss_before=before, quasi_loss_after=after,
                           rejected=rejected)

    # ------------------------------------------------------------ checkpoints
    _STATE = ("seed", "theta", "round_index", "compromised", "partition", "quasi_x", "quasi_y", "previous_update",
              "test_accuracy", "test_accuracy_round", "current")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this learning process bit-for-bit (RNG and attack state too)."""
        state = {name: getattr(self, name) for name in self._STATE}
        state["generator"] = self.generator.get_state()
        state["pattern"] = {k: v for k, v in vars(self.pattern).items() if k not in ("compromised", "generator")}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._STATE:
            setattr(self, name, state[name])
        self.generator = torch.Generator()
        self.pattern.reset(self.compromised, self.generator)
        vars(self.pattern).update(state["pattern"])
        self.generator.set_state(state["generator"])  # after the pattern's reset, which draws from it

    def evaluate(self) -> float:
        """Test accuracy of the current θ (also cached with the round it was measured at)."""
        self.test_accuracy = self.model.accuracy(self.theta, self.test_x, self.test_y)
        self.test_accuracy_round = self.round_index
        return self.test_accuracy
