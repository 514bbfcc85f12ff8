"""FLTrust (Cao, Fang, Liu, Gong, NDSS 2021)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import AggregationContext, AggregationResult, Aggregator, require_vector
from gaa_env.aggregators.registry import register_aggregator


@register_aggregator("fltrust")
class FLTrust(Aggregator):
    """FLTrust: trust scores from the cosine to the server's own gradient, rows rescaled to its norm.

    ``TS_i = ReLU(cos(G_i, g_0))``,  ``Ĝ_i = (||g_0|| / ||G_i||) · G_i``,
    ``F(G) = Σ_i TS_i Ĝ_i / Σ_j TS_j``,

    with ``g_0 = ctx.quasi_grad`` (the gradient on the server's quasi-validation / root set).
    Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping", NDSS 2021. ``ctx.n_byzantine`` is not used.

    **Credit semantics.** ``credit = TS / Σ TS`` lies on the simplex, but it weights the
    *rescaled* rows: ``update == credit @ Ĝ``, not ``credit @ G``. The coefficient applied to
    the raw row ``G_i`` is ``credit_i · ||g_0|| / ||G_i||``. A zero row has cosine 0 (trust 0).

    **No trusted row.** When every ``TS_i`` is 0 (all rows at 90° or more from ``g_0``, or
    ``g_0 = 0``) the update is the zero vector and the credit is all zeros — the server skips
    the step rather than follow rows it does not trust (a uniform fallback would let an
    all-Byzantine round move the model).

    Raises ``ValueError`` if ``ctx.quasi_grad`` is missing, has the wrong shape or non-finite
    entries. A single row is *not* passed through (it still needs a positive cosine).

    >>> import torch
    >>> G = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    >>> result = FLTrust()(G, AggregationContext(quasi_grad=torch.tensor([1.0, 1.0])))
    >>> result.credit  # cos = 0.707, 0.707, -0.707 -> TS = 0.707, 0.707, 0
    tensor([0.5000, 0.5000, 0.0000])
    >>> result.update  # rows rescaled to norm sqrt(2): (1.414, 0) and (0, 1.414), averaged
    tensor([0.7071, 0.7071])
    """

    single_row_passthrough = False

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = gradients.shape
        g0 = require_vector("fltrust", "quasi_grad", ctx.quasi_grad, d)
        g0 = g0.to(dtype=gradients.dtype, device=gradients.device)
        g0_norm = torch.linalg.vector_norm(g0.to(torch.float64))
        norms = torch.linalg.vector_norm(gradients, dim=1).to(torch.float64)  # no float64 copy of G
        dots = (gradients @ g0).to(torch.float64)
        usable = (norms > 0) & torch.isfinite(norms) & (g0_norm > 0)
        cos = torch.where(usable, dots / (norms * g0_norm).clamp(min=torch.finfo(torch.float64).tiny),
                          torch.zeros_like(dots))
        trust = torch.relu(cos)
        total = trust.sum()
        if not bool(total > 0):
            return AggregationResult(update=gradients.new_zeros(d), credit=gradients.new_zeros(n))
        credit64 = trust / total
        coef = torch.where(trust > 0, credit64 * g0_norm / norms.clamp(min=torch.finfo(torch.float64).tiny),
                           torch.zeros_like(trust))
        update = coef.to(gradients.dtype) @ gradients
        return AggregationResult(update=update, credit=credit64.to(gradients.dtype))
