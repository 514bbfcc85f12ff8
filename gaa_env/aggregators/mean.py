"""The classical GAR: the plain average (no robustness at all)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import AggregationContext, AggregationResult, Aggregator
from gaa_env.aggregators.registry import register_aggregator


@register_aggregator("mean")
class Mean(Aggregator):
    """``F(G) = (1/n) Σ_i G_i`` — the classical GAR of the paper's Sec 2, credit ``α = 1/n``.

    >>> import torch
    >>> Mean()(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).update
    tensor([2., 1.])
    """

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = gradients.shape[0]
        credit = torch.full((n,), 1.0 / n, dtype=gradients.dtype, device=gradients.device)
        return AggregationResult(update=credit @ gradients, credit=credit)
