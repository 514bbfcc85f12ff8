"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import (
    AggregationContext,
    AggregationResult,
    Aggregator,
    check_bool,
    check_int,
    one_hot_credit,
    subset_credit,
)
from gaa_env.aggregators.ops import argmin_rows, pairwise_sq_distances
from gaa_env.aggregators.registry import register_aggregator


def krum_scores(dist: torch.Tensor, n_neighbours: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """``s_i = Σ`` of the ``n_neighbours`` smallest ``dist[i, j]`` over active ``j ≠ i``.

    Rows that are not ``active`` score ``+inf`` and are never anyone's neighbour. The sum runs
    over the sorted distances, so it does not depend on the order of the rows.

    >>> d = torch.tensor([[0.0, 1.0, 4.0], [1.0, 0.0, 9.0], [4.0, 9.0, 0.0]])
    >>> krum_scores(d, 1)
    tensor([1., 1., 4.])
    """
    masked = dist.clone()
    masked.fill_diagonal_(float("inf"))
    if active is not None:
        masked[:, ~active] = float("inf")
    scores = torch.sort(masked, dim=1).values[:, :n_neighbours].sum(dim=1)
    if active is not None:
        scores[~active] = float("inf")
    return scores


def rank_rows(scores: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Row indices by increasing ``scores``; exact ties broken by the row sums of ``dist``, then by
    the lowest index (Multi-Krum's selection order).

    Exact ties are common when a score sums a single neighbour distance (``n − f − 2 = 1``): a
    mutual-nearest pair then scores the same ``dist[a, b]``; the second key separates them.

    >>> d = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 4.0], [5.0, 4.0, 0.0]])
    >>> rank_rows(krum_scores(d, 1), d)  # rows 0 and 1 tie on 1.0; row 1 is closer to the rest
    tensor([1, 0, 2])
    """
    by_secondary = torch.argsort(dist.sum(dim=1), stable=True)
    return by_secondary[torch.argsort(scores[by_secondary], stable=True)]


def krum_neighbours(label: str, n: int, f: int, strict: bool) -> int:
    """``n − f − 2`` after checking Krum's precondition (``n >= 2f + 3``, or ``n >= f + 3`` if not strict)."""
    if strict and n < 2 * f + 3:
        raise ValueError(f"{label} needs n >= 2f + 3, got n={n}, f={f}")
    if n < f + 3:
        raise ValueError(f"{label} needs n >= f + 3 (at least one neighbour per score), got n={n}, f={f}")
    return n - f - 2


def _distances(gradients: torch.Tensor, squared: bool) -> torch.Tensor:
    sq = pairwise_sq_distances(gradients)
    return sq if squared else sq.sqrt_()


@register_aggregator("krum")
class Krum(Aggregator):
    """Krum: the row closest to its ``n − f − 2`` nearest neighbours.

    ``s(i) = Σ_{j ∈ N_i} ||G_i − G_j||²``,  ``F(G) = G_{i*}`` with ``i* = argmin_i s(i)``,

    where ``N_i`` holds the ``n − f − 2`` rows closest to ``G_i`` (Blanchard et al., "Machine
    Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017; baseline (D)
    of the GAAvernor paper). Credit is one-hot on ``i*``. Score ties up to rounding (e.g. a
    mutual-nearest pair when ``n − f − 2 = 1``) go to the row with the smaller sum of distances to all rows,
    then to the lexicographically smallest row (:func:`~gaa_env.aggregators.ops.argmin_rows`), so
    the choice does not depend on the order of the rows.

    Args:
        squared: score with squared distances (paper, default) or plain distances (the
            GAAvernor authors' code).
        strict: require Krum's precondition ``n >= 2f + 3``. ``strict=False`` only requires a
            defined score (``n >= f + 3``) — e.g. to reproduce the paper's runs at β >= 0.5,
            where the guarantee does not hold.

    Raises ``ValueError("Krum needs n >= 2f + 3, got n=.., f=..")`` otherwise. A single row with
    ``f = 0`` is returned as is.

    >>> import torch
    >>> G = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [10.0, 10.0]])
    >>> result = Krum()(G, AggregationContext(n_byzantine=1))
    >>> result.update, result.credit
    (tensor([0., 0.]), tensor([1., 0., 0., 0., 0.]))
    """

    def __init__(self, *, squared: bool = True, strict: bool = True) -> None:
        self.squared = check_bool("krum", "squared", squared)
        self.strict = check_bool("krum", "strict", strict)

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = gradients.shape[0]
        k = krum_neighbours("Krum", n, ctx.n_byzantine, self.strict)
        dist = _distances(gradients, self.squared)
        best = argmin_rows(krum_scores(dist, k), gradients, secondary=dist.sum(dim=1))
        return AggregationResult(update=gradients[best].clone(), credit=one_hot_credit(n, best, gradients))


@register_aggregator("multi_krum")
class MultiKrum(Aggregator):
    """Multi-Krum: the mean of the ``m`` rows with the lowest Krum scores.

    ``F(G) = (1/m) Σ_{i ∈ M} G_i`` with ``M`` = the ``m`` rows of smallest Krum score ``s(i)``,
    ``s`` computed once on all rows (Blanchard et al., NeurIPS 2017, Sec. 4 "Multi-Krum").
    Credit is ``1/m`` on the selected rows (score ties: smaller sum of distances, then lower index).

    Args:
        m: number of rows averaged; ``None`` (default) means ``n − f``. Must be ``<= n``.
        squared, strict: as for :class:`Krum`.

    >>> import torch
    >>> G = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [10.0, 10.0]])
    >>> result = MultiKrum(m=3)(G, AggregationContext(n_byzantine=1))
    >>> result.credit
    tensor([0.3333, 0.3333, 0.3333, 0.0000, 0.0000])
    """

    def __init__(self, *, m: int | None = None, squared: bool = True, strict: bool = True) -> None:
        self.m = None if m is None else check_int("multi_krum", "m", m, minimum=1)
        self.squared = check_bool("multi_krum", "squared", squared)
        self.strict = check_bool("multi_krum", "strict", strict)

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = gradients.shape[0]
        f = ctx.n_byzantine
        k = krum_neighbours("Multi-Krum", n, f, self.strict)
        m = n - f if self.m is None else self.m
        if m > n:
            raise ValueError(f"multi_krum: m must be <= n, got m={m}, n={n}")
        dist = _distances(gradients, self.squared)
        selected = rank_rows(krum_scores(dist, k), dist)[:m]
        credit = subset_credit(n, selected, gradients)
        return AggregationResult(update=credit @ gradients, credit=credit)
