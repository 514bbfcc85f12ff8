"""Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018)."""

from __future__ import annotations

import torch

from gaa_env.aggregators.base import AggregationContext, AggregationResult, Aggregator
from gaa_env.aggregators.krum import krum_scores
from gaa_env.aggregators.ops import argmin_rows, median_of_sorted, pairwise_sq_distances, sorted_column_chunks
from gaa_env.aggregators.registry import register_aggregator


def bulyan_selection(gradients: torch.Tensor, sq_dist: torch.Tensor, f: int, theta: int) -> torch.Tensor:
    """Indices of ``theta`` rows picked one at a time by Krum on the rows not yet picked.

    At each step Krum scores the ``r`` remaining rows with ``k = r − f − 2`` neighbours among
    them; ``k`` is kept in ``[1, r − 1]`` (the formula reaches 0 at the last step when ``f = 1``,
    where Krum is undefined — the nearest remaining neighbour is used then). Score ties go to the
    smaller sum of squared distances to the remaining rows, then to the lexicographically
    smallest row (:func:`~gaa_env.aggregators.ops.argmin_rows`). Returned sorted.
    """
    n = sq_dist.shape[0]
    remaining = torch.ones(n, dtype=torch.bool, device=sq_dist.device)
    picked = []
    for _ in range(theta):  # inherently sequential: each pick changes the next scores
        r = int(remaining.sum())
        if r == 1:
            best = int(remaining.nonzero()[0])
        else:
            k = min(max(r - f - 2, 1), r - 1)
            scores = krum_scores(sq_dist, k, active=remaining)
            best = argmin_rows(scores, gradients, secondary=sq_dist[:, remaining].sum(dim=1))
        picked.append(best)
        remaining[best] = False
    return torch.tensor(sorted(picked), dtype=torch.long, device=sq_dist.device)


_WINDOW_CHUNK_COLS = 16384


def closest_to_median_mean(block: torch.Tensor, beta: int) -> torch.Tensor:
    """Per column of a column-sorted ``[θ, c]`` block: mean of the ``β`` values closest to the median.

    The ``β`` values nearest to a point ``m`` form a contiguous window ``[s, s + β)`` of the sorted
    column, one minimising ``cost(s) = max(m − x_s, x_{s+β−1} − m)``. The first term falls and
    the second rises with ``s``, so with ``c = #{s : x_{s+β−1} − m < m − x_s}`` the minimum is at
    ``s = c − 1`` or ``s = c`` (the smaller cost, the left one on a tie): no argmin over all windows
    (a slow strided reduction), and columns are processed in cache-sized chunks.
    """
    theta, width = block.shape
    n_windows = theta - beta + 1
    offsets = torch.arange(beta, device=block.device).unsqueeze(1)
    out = block.new_empty(width)
    for start in range(0, width, _WINDOW_CHUNK_COLS):
        b = block[:, start:start + _WINDOW_CHUNK_COLS]
        med = median_of_sorted(b)
        left = med - b[:n_windows]
        right = b[beta - 1:beta - 1 + n_windows] - med
        crossing = (right < left).sum(dim=0)
        hi = crossing.clamp(max=n_windows - 1).unsqueeze(0)
        lo = (crossing - 1).clamp(min=0).unsqueeze(0)
        cost_lo = torch.maximum(left.gather(0, lo), right.gather(0, lo))
        cost_hi = torch.maximum(left.gather(0, hi), right.gather(0, hi))
        first = torch.where(cost_lo <= cost_hi, lo, hi)
        out[start:start + b.shape[1]] = torch.gather(b, 0, first + offsets).mean(dim=0)
    return out


@register_aggregator("bulyan")
class Bulyan(Aggregator):
    """Bulyan over Krum.

    1. Selection: ``θ = n − 2f`` rows, one at a time, each the Krum winner (squared distances,
       ``n' − f − 2`` neighbours) among the ``n'`` rows not selected yet.
    2. Coordinate-wise: ``F(G)_k = (1/β) Σ_{v ∈ B_k} v`` with ``β = θ − 2f = n − 4f`` and ``B_k``
       the ``β`` selected values of coordinate ``k`` closest to their median.

    El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018; baseline (E) of the GAAvernor paper. The median of an even number of
    values is the midpoint of the two middle ones. Precondition ``n >= 4f + 3`` (else
    ``ValueError``); a single row with ``f = 0`` is returned as is. The output lies in the
    coordinate-wise ``[min, max]`` of the inputs but is not a convex combination of whole rows,
    so credit is ``None``. Coordinate ties are resolved on values and Krum-score ties on the
    summed distances, so the result does not depend on the order of the rows.

    >>> import torch
    >>> G = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [100.0]])
    >>> Bulyan()(G, AggregationContext(n_byzantine=1)).update  # selects 1..5; median 3; mean of 2, 3, 4
    tensor([3.])
    """

    returns_credit = False

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = gradients.shape
        f = ctx.n_byzantine
        if n < 4 * f + 3:
            raise ValueError(f"Bulyan needs n >= 4f + 3, got n={n}, f={f}")
        theta = n - 2 * f
        beta = theta - 2 * f
        selected = bulyan_selection(gradients, pairwise_sq_distances(gradients), f, theta)
        update = gradients.new_empty(d)
        for start, stop, block in sorted_column_chunks(gradients, rows=selected):
            update[start:stop] = closest_to_median_mean(block, beta)
        return AggregationResult(update=update, credit=None)
