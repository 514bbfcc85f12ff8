"""Geometric-median rules: the paper's GeoMed (the medoid) and the Weiszfeld geometric median."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import (
    AggregationContext,
    AggregationResult,
    Aggregator,
    check_float,
    check_int,
    one_hot_credit,
)
from gaa_env.aggregators.ops import argmin_rows, centered_gram, pairwise_distances
from gaa_env.aggregators.registry import register_aggregator


@register_aggregator("geomed")
class GeoMed(Aggregator):
    """GeoMed as in the GAAvernor paper: the *medoid*, the submitted row with the smallest
    sum of distances to all others.

    ``F(G) = G_{i*}``,  ``i* = argmin_i Σ_j ||G_i − G_j||``.

    This is baseline (C) of Pan et al., "Justinian's GAAvernor" (USENIX Security 2020), a
    discrete variant of the geometric median of Chen, Su, Xu ("Distributed Statistical Machine
    Learning in Adversarial Settings", POMACS 2017); the authors' code computes it as Krum with
    ``f = −1``. Credit is one-hot on ``i*``; ties (up to rounding; always the case for ``n = 2``) go to
    the lexicographically smallest row (:func:`~gaa_env.aggregators.ops.argmin_rows`), so the
    choice does not depend on the order of the rows. ``ctx.n_byzantine`` is not
    used; the breakdown point is 1/2, so the output is only guaranteed robust when
    ``n >= 2f + 1`` (the paper also runs it beyond that, where it fails, hence no error).

    >>> import torch
    >>> G = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    >>> result = GeoMed()(G)
    >>> result.update, result.credit  # rows 1 and 2 tie (1 + √2 + √41); (0, 1) < (1, 0)
    (tensor([0., 1.]), tensor([0., 0., 1., 0.]))
    """

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        best = argmin_rows(pairwise_distances(gradients).sum(dim=1), gradients)
        n = gradients.shape[0]
        return AggregationResult(update=gradients[best].clone(), credit=one_hot_credit(n, best, gradients))


@register_aggregator("geometric_median")
class GeometricMedian(Aggregator):
    """The geometric median ``argmin_z Σ_i ||G_i − z||`` by smoothed Weiszfeld iterations.

    ``z_{t+1} = Σ_i w_i G_i / Σ_i w_i``,  ``w_i = 1 / max(eps, ||G_i − z_t||)``,  ``z_0`` = mean,

    stopping when ``||z_{t+1} − z_t|| <= tol · mean_i ||G_i − z_t||`` or after ``max_iter``
    steps (Weiszfeld 1937; the smoothing is that of RFA, Pillutla, Kakade, Harchaoui,
    "Robust Aggregation for Federated Learning", IEEE TSP 2022).

    Every iterate is a convex combination of the rows, so the whole iteration runs on the
    ``n × n`` Gram matrix of the centered rows (``||G_i − αᵀG||² = K_ii − 2(Kα)_i + αᵀKα``):
    one ``O(n²d)`` pass, then ``O(n²)`` per iteration, then one ``O(nd)`` combination.
    Credit is the final normalised weight vector ``α = w / Σ w`` and ``update == α @ G``.
    ``ctx.n_byzantine`` is not used (breakdown point 1/2). In Gram form a distance near a row is
    only resolved to about ``sqrt(eps_dtype) ·`` the spread of the rows (float32: ~3e-4 of it),
    which acts as extra smoothing when the median sits on a row.

    Args:
        tol: relative stopping tolerance (>= 0).
        max_iter: maximum number of Weiszfeld steps (>= 1).
        eps: distance floor that keeps the weights finite when ``z`` reaches a row (> 0,
            in the units of the gradients).

    >>> import torch
    >>> G = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    >>> result = GeometricMedian()(G)
    >>> result.update, result.credit
    (tensor([1., 1.]), tensor([0.2500, 0.2500, 0.2500, 0.2500]))
    """

    def __init__(self, *, tol: float = 1e-6, max_iter: int = 100, eps: float = 1e-8) -> None:
        self.tol = check_float("geometric_median", "tol", tol, low=0.0)
        self.max_iter = check_int("geometric_median", "max_iter", max_iter, minimum=1)
        self.eps = check_float("geometric_median", "eps", eps, low=0.0, low_open=True)

    def weiszfeld_weights(self, gradients: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Final weights ``α`` (float64, on the simplex) and the number of iterations used."""
        n = gradients.shape[0]
        gram = centered_gram(gradients)
        diag = torch.diagonal(gram)
        alpha = torch.full((n,), 1.0 / n, dtype=torch.float64, device=gradients.device)
        iterations = 0
        for iterations in range(1, self.max_iter + 1):  # noqa: B007  (reported after the loop)
            k_alpha = gram @ alpha
            dist = (diag - 2.0 * k_alpha + alpha @ k_alpha).clamp_(min=0.0).sqrt_()
            weights = 1.0 / dist.clamp(min=self.eps)
            new_alpha = weights / weights.sum()
            delta = new_alpha - alpha
            move = float((delta @ gram @ delta).clamp(min=0.0).sqrt())
            alpha = new_alpha
            if move <= self.tol * float(dist.mean()):
                break
        return alpha, iterations

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        alpha, _ = self.weiszfeld_weights(gradients)
        credit = alpha.to(gradients.dtype)
        return AggregationResult(update=credit @ gradients, credit=credit)
