"""The Brute-Force baseline: mean of the ``n − f`` rows with the smallest diameter."""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np
import torch

from gaa_env.aggregators.base import (
    AggregationContext,
    AggregationResult,
    Aggregator,
    check_bool,
    subset_credit,
)
from gaa_env.aggregators.ops import pairwise_sq_distances
from gaa_env.aggregators.registry import register_aggregator

_BATCH_ELEMS = 1 << 22


@register_aggregator("brute_force")
class BruteForce(Aggregator):
    """Brute-Force: the subset of ``n − f`` rows with the smallest diameter, averaged.

    ``C* = argmin_{C ⊂ [n], |C| = n − f} max_{i, j ∈ C} ||G_i − G_j||``,
    ``F(G) = (1/(n − f)) Σ_{i ∈ C*} G_i``.

    Baseline (B) of Pan et al., "Justinian's GAAvernor" (USENIX Security 2020), after the
    minimum-diameter averaging of El Mhamdi, Guerraoui, Rouault (ICML 2018). Exact: all
    ``C(n, f)`` subsets are enumerated (through their ``f`` left-out rows, vectorised in batches
    over the pairwise-distance matrix). Equal diameters are common (the same farthest pair
    survives several removals); they are broken by the smaller sum of squared pairwise distances
    in the subset, then by enumeration order, so the choice does not depend on the row order.
    Credit is ``1/(n − f)`` on ``C*``, so ``update == credit @ G``.

    Args:
        max_subsets: refuse (``ValueError``) to enumerate more than this many subsets
            (default ``1e6``; ``C(50, 10) ≈ 1e10`` for MNIST with β = 0.2 would take days).
            Raise it to run larger problems anyway.
        strict: require ``n >= 2f + 1`` (a majority of honest rows, the paper's precondition).
            ``strict=False`` only requires ``n > f`` — e.g. to reproduce the paper's β = 0.5 runs.

    >>> import torch
    >>> G = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    >>> result = BruteForce()(G, AggregationContext(n_byzantine=1))
    >>> result.credit
    tensor([0.3333, 0.3333, 0.3333, 0.0000])
    >>> result.update
    tensor([0.3333, 0.3333])
    """

    def __init__(self, *, max_subsets: int | float = 1_000_000, strict: bool = True) -> None:
        ok = (isinstance(max_subsets, numbers.Real) and not isinstance(max_subsets, bool)
              and float(max_subsets) >= 1 and float(max_subsets).is_integer())
        if not ok:
            raise ValueError(f"brute_force: max_subsets must be a whole number >= 1, got {max_subsets!r}")
        self.max_subsets = int(max_subsets)
        self.strict = check_bool("brute_force", "strict", strict)

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = gradients.shape[0]
        f = ctx.n_byzantine
        if self.strict and n < 2 * f + 1:
            raise ValueError(
                f"brute_force needs n >= 2f + 1, got n={n}, f={f} (strict=False only needs n > f)")
        if n <= f:
            raise ValueError(f"brute_force needs n > f, got n={n}, f={f}")
        count = math.comb(n, f)
        if count > self.max_subsets:
            raise ValueError(f"brute_force would enumerate C(n={n}, f={f}) = {count} subsets, more than "
                             f"max_subsets={self.max_subsets}; pass a larger max_subsets to run it anyway")
        sq_dist = pairwise_sq_distances(gradients)
        left_out = self._smallest_diameter_left_out(sq_dist, f, count)
        keep = torch.ones(n, dtype=torch.bool)
        keep[left_out] = False
        credit = subset_credit(n, keep.nonzero().squeeze(1).to(gradients.device), gradients)
        return AggregationResult(update=credit @ gradients, credit=credit)

    @staticmethod
    def _smallest_diameter_left_out(sq_dist: torch.Tensor, f: int, count: int) -> list[int]:
        n = sq_dist.shape[0]
        if f == 0:
            return []
        sq_dist = sq_dist.cpu()
        batch = max(1, _BATCH_ELEMS // (n * n))
        combos = itertools.combinations(range(n), f)
        best_key = (math.inf, math.inf)
        best: list[int] = []
        done = 0
        zero = torch.zeros((), dtype=sq_dist.dtype)
        while done < count:
            size = min(batch, count - done)
            flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, size)),
                               dtype=np.int64, count=size * f)
            removed = torch.from_numpy(flat).view(size, f)
            keep = torch.ones(size, n, dtype=torch.bool)
            keep.scatter_(1, removed, False)
            within = torch.where(keep.unsqueeze(2) & keep.unsqueeze(1), sq_dist, zero)
            diameter = within.amax(dim=(1, 2))
            tied = (diameter == diameter.min()).nonzero().squeeze(1)
            spread = within[tied].sum(dim=(1, 2))
            j = int(tied[int(torch.argmin(spread))])
            key = (float(diameter[j]), float(within[j].sum()))
            if key < best_key:
                best_key = key
                best = removed[j].tolist()
            done += size
        return best
