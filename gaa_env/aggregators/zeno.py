"""Zeno (Xie, Koyejo, Gupta, ICML 2019)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import (
    AggregationContext,
    AggregationResult,
    Aggregator,
    check_float,
    check_int,
    subset_credit,
)
from gaa_env.aggregators.registry import register_aggregator


@register_aggregator("zeno")
class Zeno(Aggregator):
    """Zeno: rank rows by the quasi-validation loss decrease they would cause, average the best.

    ``score_i = f_B(θ) − f_B(θ − λ G_i) − ρ ||G_i||²``,  ``F(G) = (1/(n − b)) Σ_{i ∈ top(n − b)} G_i``.

    Xie, Koyejo, Gupta, "Zeno: Distributed Stochastic Gradient Descent with Suspicion-based
    Fault-tolerance", ICML 2019. ``f_B(θ)`` is ``ctx.quasi_loss``; the look-ahead losses come from
    one batched call ``ctx.quasi_loss_after_step(G)`` (which applies the step size ``λ = ctx.lr``
    itself). Credit is ``1/(n − b)`` on the kept rows, so ``update == credit @ G``. Score ties go
    to the lowest index; a NaN score (non-finite look-ahead loss) ranks last.

    Args:
        rho: norm penalty ``ρ >= 0`` (default 5e-4, the order used in the paper's experiments).
        b: number of rows dropped; ``None`` (default) means ``ctx.n_byzantine``. Needs ``b < n``.

    Raises ``ValueError`` when ``ctx.quasi_loss`` or ``ctx.quasi_loss_after_step`` is missing,
    when the latter does not return ``n`` values, or when ``b >= n``. A single row is not passed
    through (the context is still checked).

    >>> import torch
    >>> G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-5.0, -5.0]])
    >>> theta = torch.tensor([1.0, 1.0])  # f_B(θ) = ½||θ||² = 1
    >>> lookahead = lambda U: 0.5 * ((theta - 0.1 * U) ** 2).sum(dim=1)
    >>> ctx = AggregationContext(n_byzantine=1, quasi_loss=1.0, quasi_loss_after_step=lookahead, lr=0.1)
    >>> result = Zeno(rho=0.0)(G, ctx)
    >>> result.credit, result.update
    (tensor([0.5000, 0.5000, 0.0000]), tensor([0.5000, 0.5000]))
    """

    single_row_passthrough = False

    def __init__(self, *, rho: float = 5e-4, b: int | None = None) -> None:
        self.rho = check_float("zeno", "rho", rho, low=0.0)
        self.b = None if b is None else check_int("zeno", "b", b, minimum=0)

    def scores(self, gradients: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
        """The Zeno scores ``[n]`` (float64)."""
        n = gradients.shape[0]
        if ctx.quasi_loss is None:
            raise ValueError("zeno needs ctx.quasi_loss (f_B(θ) at the current parameters), but it is None")
        if ctx.quasi_loss_after_step is None:
            raise ValueError(
                "zeno needs ctx.quasi_loss_after_step (batched look-ahead losses), but it is None")
        after = torch.as_tensor(ctx.quasi_loss_after_step(gradients)).detach()
        if after.shape != (n,):
            raise ValueError(
                f"zeno: ctx.quasi_loss_after_step must return shape ({n},), got {tuple(after.shape)}")
        before = float(ctx.quasi_loss)
        sq_norms = torch.linalg.vector_norm(gradients, dim=1).to(torch.float64).pow(2)  # no float64 copy of G
        return before - after.to(device=sq_norms.device, dtype=torch.float64) - self.rho * sq_norms

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = gradients.shape[0]
        b = ctx.n_byzantine if self.b is None else self.b
        if b >= n:
            raise ValueError(f"zeno needs b < n (b rows dropped), got n={n}, b={b}")
        score = self.scores(gradients, ctx)
        score = torch.nan_to_num(score, nan=-float("inf"))
        kept = torch.argsort(score, descending=True, stable=True)[:n - b]
        credit = subset_credit(n, kept, gradients)
        return AggregationResult(update=credit @ gradients, credit=credit)
