"""Centered clipping (Karimireddy, He, Jaggi, ICML 2021)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import (
    AggregationContext,
    AggregationResult,
    Aggregator,
    check_float,
    check_int,
    require_vector,
)
from gaa_env.aggregators.registry import register_aggregator

_NORM_CHUNK_COLS = 1 << 16


def _distances_to(gradients: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """``||G_i − v||`` for every row, in float64, with one ``[n, chunk]`` temporary."""
    n, d = gradients.shape
    sq = torch.zeros(n, dtype=torch.float64, device=gradients.device)
    for start in range(0, d, _NORM_CHUNK_COLS):
        diff = gradients[:, start:start + _NORM_CHUNK_COLS] - center[start:start + _NORM_CHUNK_COLS]
        sq += torch.linalg.vector_norm(diff, dim=1).to(torch.float64).pow(2)
    return sq.sqrt_()


@register_aggregator("centered_clipping")
class CenteredClipping(Aggregator):
    """Centered clipping: clip every row's deviation from a center ``v`` and move ``v``.

    ``v ← v + (1/n) Σ_i clip_τ(G_i − v)``,  ``clip_τ(x) = x · min(1, τ / ||x||)``,  repeated
    ``n_iter`` times; the update is the final ``v``. Karimireddy, He, Jaggi, "Learning from History
    for Byzantine Robust Optimization", ICML 2021 (Algorithm 2).

    The starting center is ``ctx.previous_update`` when the context provides it, otherwise this
    rule's own state (the previous output, kept between calls — the reference code's
    ``momentum``), otherwise zero. The state is overwritten after every call and cleared by
    :meth:`reset`. Each step equals ``v(1 − Σ s_i / n) + Σ (s_i / n) G_i`` with
    ``s_i = min(1, τ / ||G_i − v||)``, so only the ``n`` norms need an ``[n, chunk]`` temporary.

    Credit is ``None`` (the update is an affine combination of ``v`` and the rows). A single row
    is *not* passed through (the clip still applies). ``ctx.n_byzantine`` is not used.

    Args:
        tau: clipping radius ``τ > 0`` (default 10, as in the reference code's experiments).
        n_iter: clipping iterations ``>= 1`` per call (default 1, the reference code's default).

    >>> import torch
    >>> rule = CenteredClipping(tau=1.0)
    >>> rule(torch.tensor([[0.5, 0.0], [0.0, 4.0]])).update  # v0 = 0: (0.5, 0) kept, (0, 4) clipped to (0, 1)
    tensor([0.2500, 0.5000])
    """

    returns_credit = False
    single_row_passthrough = False

    def __init__(self, *, tau: float = 10.0, n_iter: int = 1) -> None:
        self.tau = check_float("centered_clipping", "tau", tau, low=0.0, low_open=True)
        self.n_iter = check_int("centered_clipping", "n_iter", n_iter, minimum=1)
        self._momentum: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the stored center."""
        self._momentum = None

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = gradients.shape
        if ctx.previous_update is not None:
            center = require_vector("centered_clipping", "previous_update", ctx.previous_update, d)
        elif self._momentum is not None:
            if self._momentum.shape != (d,):
                raise ValueError(f"centered_clipping: stored center has shape {tuple(self._momentum.shape)}, "
                                 f"gradients have d={d}; call reset() between problems")
            center = self._momentum
        else:
            center = gradients.new_zeros(d)
        center = center.to(dtype=gradients.dtype, device=gradients.device)
        for _ in range(self.n_iter):
            dist = _distances_to(gradients, center)
            scale = torch.where(dist > self.tau, self.tau / dist.clamp(min=self.tau), torch.ones_like(dist))
            coef = (scale / n).to(gradients.dtype)
            center = center * (1.0 - coef.sum()) + coef @ gradients
        self._momentum = center.detach().clone()
        return AggregationResult(update=center, credit=None)
