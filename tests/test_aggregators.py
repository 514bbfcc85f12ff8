"""Tests of the aggregation rules: properties (hypothesis), hand-checked cases, degenerate inputs, errors.

Expected values are computed by hand (arithmetic in the comments) or by a naive loop
implementation written here, never by the code under test.
"""

from __future__ import annotations

import doctest
import importlib
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaa_env.aggregators import (
    AGGREGATORS,
    AggregationContext,
    Bulyan,
    CenteredClipping,
    FLTrust,
    GeometricMedian,
    Krum,
    MultiKrum,
    TrimmedMean,
    Zeno,
    make_aggregator,
    ops,
)
from gaa_env.aggregators.base import finite_row_mask
from gaa_env.aggregators.bulyan import closest_to_median_mean
from gaa_env.aggregators.ops import pairwise_sq_distances

SETTINGS = settings(max_examples=50, deadline=None)
NAN, INF = float("nan"), float("inf")

CONVEX = ["mean", "brute_force", "geomed", "geometric_median", "krum", "multi_krum", "zeno"]
COORDINATEWISE = ["median", "trimmed_mean", "bulyan"]
ALL_RULES = sorted(AGGREGATORS)


def max_f(name: str, n: int) -> int:
    """Largest f each rule accepts for n rows (-1: none)."""
    if name in ("krum", "multi_krum"):
        return (n - 3) // 2
    if name == "bulyan":
        return (n - 3) // 4
    if name in ("brute_force", "trimmed_mean"):
        return (n - 1) // 2
    if name == "zeno":
        return n - 1
    return n  # f is not used


def min_n(name: str) -> int:
    return 3 if name in ("krum", "multi_krum", "bulyan") else 1


def quadratic_context(d: int, f: int, *, dtype=torch.float64, seed: int = 0) -> AggregationContext:
    """A context with every field set: f_B(θ) = ½||θ − c||², quasi_grad = θ − c."""
    gen = torch.Generator().manual_seed(seed + 12345)
    theta = torch.randn(d, generator=gen, dtype=dtype)
    target = torch.randn(d, generator=gen, dtype=dtype)
    lr = 0.1

    def after_step(updates: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((theta - lr * updates - target) ** 2).sum(dim=1)

    return AggregationContext(
        n_byzantine=f, quasi_grad=theta - target, previous_update=None,
        quasi_loss=float(0.5 * ((theta - target) ** 2).sum()), quasi_loss_after_step=after_step, lr=lr)


def random_rows(seed: int, n: int, d: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(n, 1, generator=gen, dtype=dtype))
    return torch.randn(n, d, generator=gen, dtype=dtype) * scale


def fresh(name: str, **kwargs):
    return make_aggregator(name, **kwargs)


# --------------------------------------------------------------------------- registry & doctests


def test_registry_lists_every_rule():
    assert set(AGGREGATORS) == {
        "mean", "brute_force", "geomed", "geometric_median", "krum", "multi_krum", "bulyan", "median",
        "trimmed_mean", "centered_clipping", "fltrust", "zeno"}


def test_unknown_name_lists_allowed_rules():
    with pytest.raises(ValueError, match=r"unknown aggregator 'nope'; allowed: \[.*'krum'"):
        make_aggregator("nope")


@pytest.mark.parametrize("module", ["base", "ops", "mean", "brute_force", "geomed", "krum", "bulyan",
                                    "coordinatewise", "clipping", "fltrust", "zeno", "detection"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(f"gaa_env.aggregators.{module}"))
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", ALL_RULES)
@SETTINGS
@given(data=st.data())
def test_permutation_invariance(name, data):
    n = data.draw(st.integers(min_n(name), 9 if name == "brute_force" else 12), label="n")
    d = data.draw(st.integers(1, 6), label="d")
    f = data.draw(st.integers(0, max(0, min(max_f(name, n), n))), label="f")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    perm = torch.tensor(data.draw(st.permutations(range(n)), label="perm"))
    G = random_rows(seed, n, d)
    ctx = quadratic_context(d, f, seed=seed)
    first = fresh(name)(G, ctx)
    second = fresh(name)(G[perm], ctx)
    # Weiszfeld may stop one iteration apart when summation order changes: tolerance ~ its tol
    tol = 1e-5 if name == "geometric_median" else 1e-9
    torch.testing.assert_close(second.update, first.update, rtol=tol, atol=tol)
    if first.credit is None:
        assert second.credit is None
    else:
        torch.testing.assert_close(second.credit, first.credit[perm], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CONVEX)
@SETTINGS
@given(data=st.data())
def test_convex_rules_return_credit_weighted_rows(name, data):
    n = data.draw(st.integers(min_n(name), 9), label="n")
    d = data.draw(st.integers(1, 5), label="d")
    f = data.draw(st.integers(0, max(0, min(max_f(name, n), n))), label="f")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    G = random_rows(seed, n, d)
    result = fresh(name)(G, quadratic_context(d, f, seed=seed))
    assert result.credit is not None and result.credit.shape == (n,)
    assert bool((result.credit >= 0).all())
    assert math.isclose(float(result.credit.sum()), 1.0, rel_tol=1e-12)
    torch.testing.assert_close(result.update, result.credit @ G, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), d=st.integers(1, 5))
def test_fltrust_update_is_credit_over_rescaled_rows(seed, n, d):
    G = random_rows(seed, n, d)
    ctx = quadratic_context(d, 0, seed=seed)
    result = FLTrust()(G, ctx)
    g0 = ctx.quasi_grad
    rescaled = G * (g0.norm() / G.norm(dim=1, keepdim=True))
    assert bool((result.credit >= 0).all())
    total = float(result.credit.sum())
    if total == 0.0:  # no row within 90 degrees of g0: the documented zero update
        assert bool(((G @ g0) <= 0).all())
        assert bool((result.update == 0).all())
    else:
        assert math.isclose(total, 1.0, rel_tol=1e-12)
        torch.testing.assert_close(result.update, result.credit @ rescaled, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", COORDINATEWISE)
@SETTINGS
@given(data=st.data())
def test_coordinatewise_rules_stay_in_coordinate_range(name, data):
    n = data.draw(st.integers(min_n(name), 12), label="n")
    d = data.draw(st.integers(1, 6), label="d")
    f = data.draw(st.integers(0, max(0, max_f(name, n))), label="f")
    G = random_rows(data.draw(st.integers(0, 2**31 - 1), label="seed"), n, d)
    result = fresh(name)(G, AggregationContext(n_byzantine=f))
    assert result.credit is None
    assert bool((result.update >= G.min(dim=0).values).all())
    assert bool((result.update <= G.max(dim=0).values).all())


ROBUST = ["krum", "multi_krum", "median", "geomed", "bulyan", "trimmed_mean", "brute_force"]


@pytest.mark.parametrize("name", ROBUST)
@SETTINGS
@given(data=st.data())
def test_far_outliers_do_not_move_the_output_out_of_the_honest_box(name, data):
    n = data.draw(st.integers(3, 9 if name == "brute_force" else 13), label="n")
    f = data.draw(st.integers(0, max(0, min(max_f(name, n), (n - 1) // 2))), label="f")
    d = data.draw(st.integers(1, 5), label="d")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    honest = torch.rand(n - f, d, generator=gen, dtype=torch.float32)  # inside [0, 1)^d
    outliers = torch.full((f, d), 1e3)  # f identical Byzantine rows far away
    G = torch.cat([outliers, honest])
    result = fresh(name)(G, AggregationContext(n_byzantine=f))
    assert bool((result.update >= honest.min(dim=0).values - 1e-6).all())
    assert bool((result.update <= honest.max(dim=0).values + 1e-6).all())


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 8), d=st.integers(1, 4))
def test_geometric_median_is_no_worse_than_any_row_or_the_mean(seed, n, d):
    G = random_rows(seed, n, d)
    z = GeometricMedian(tol=1e-10, max_iter=500)(G).update

    def objective(p: torch.Tensor) -> float:
        return float((G - p).norm(dim=1).sum())

    best_candidate = min([objective(row) for row in G] + [objective(G.mean(dim=0))])
    assert objective(z) <= best_candidate * (1 + 1e-6) + 1e-9


# --------------------------------------------------------------------------- naive references


def sq(p: list[float], q: list[float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(p, q))


def naive_krum_pick(points: list[list[float]], candidates: list[int], k: int) -> int:
    """Krum winner among ``candidates`` with k neighbours; ties -> smaller sum of squared distances."""
    keys = []
    for i in candidates:
        dists = sorted(sq(points[i], points[j]) for j in candidates if j != i)
        keys.append((sum(dists[:k]), sum(dists)))
    return candidates[keys.index(min(keys))]


def naive_bulyan(points: list[list[float]], f: int) -> list[float]:
    """Loop-by-loop El Mhamdi et al. 2018: Krum picks on the remaining set, then the beta closest to
    the median."""
    remaining = list(range(len(points)))
    picked = []
    for _ in range(len(points) - 2 * f):
        r = len(remaining)
        best = remaining[0] if r == 1 else naive_krum_pick(points, remaining, min(max(r - f - 2, 1), r - 1))
        picked.append(best)
        remaining.remove(best)
    beta = len(picked) - 2 * f
    out = []
    for c in range(len(points[0])):
        column = [points[i][c] for i in picked]
        med = float(np.median(column))
        closest = sorted(column, key=lambda v: abs(v - med))[:beta]
        out.append(sum(closest) / beta)
    return out


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 10), d=st.integers(1, 4), data=st.data())
def test_krum_matches_naive_loops(seed, n, d, data):
    f = data.draw(st.integers(0, (n - 3) // 2), label="f")
    G = random_rows(seed, n, d)
    expected = naive_krum_pick(G.tolist(), list(range(n)), n - f - 2)
    result = Krum()(G, AggregationContext(n_byzantine=f))
    assert int(result.credit.argmax()) == expected
    torch.testing.assert_close(result.update, G[expected])


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 13), d=st.integers(1, 4), data=st.data())
def test_bulyan_matches_naive_loops(seed, n, d, data):
    f = data.draw(st.integers(0, (n - 3) // 4), label="f")
    G = random_rows(seed, n, d)
    result = Bulyan()(G, AggregationContext(n_byzantine=f))
    torch.testing.assert_close(result.update, torch.tensor(naive_bulyan(G.tolist(), f), dtype=G.dtype))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 8), d=st.integers(1, 3), data=st.data())
def test_brute_force_matches_enumeration_of_kept_subsets(seed, n, d, data):
    f = data.draw(st.integers(0, (n - 1) // 2), label="f")
    G = random_rows(seed, n, d)
    points = G.tolist()

    def diameter_then_spread(subset):  # ties on the diameter -> smaller sum of squared pairwise distances
        pairs = [sq(points[i], points[j]) for i, j in itertools.combinations(subset, 2)]
        return (max(pairs, default=0.0), sum(pairs))

    best = min(itertools.combinations(range(n), n - f), key=diameter_then_spread)
    result = make_aggregator("brute_force")(G, AggregationContext(n_byzantine=f))
    torch.testing.assert_close(result.update, G[list(best)].mean(dim=0))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), d=st.integers(1, 5), data=st.data())
def test_median_and_trimmed_mean_match_numpy(seed, n, d, data):
    f = data.draw(st.integers(0, (n - 1) // 2), label="f")
    G = random_rows(seed, n, d, dtype=torch.float32)
    X = G.numpy().astype(np.float64)
    median = make_aggregator("median")(G).update
    np.testing.assert_allclose(median.numpy(), np.median(X, axis=0), rtol=1e-6, atol=1e-6)
    trimmed = make_aggregator("trimmed_mean")(G, AggregationContext(n_byzantine=f)).update
    expected = np.sort(X, axis=0)[f:n - f].mean(axis=0)
    np.testing.assert_allclose(trimmed.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert median.dtype == torch.float32 and trimmed.dtype == torch.float32


# --------------------------------------------------------------------------- hand-checked cases


def test_mean_hand_example():
    result = make_aggregator("mean")(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    # ((1 + 3) / 2, (2 + 6) / 2) = (2, 4)
    torch.testing.assert_close(result.update, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(result.credit, torch.tensor([0.5, 0.5]))


def test_brute_force_hand_example():
    G = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    # f = 1: subsets of 3 and their diameters: {0,1,3}: 3, {0,1,10}: 10, {0,3,10}: 10, {1,3,10}: 9
    # -> {0, 1, 3}, mean 4/3
    result = make_aggregator("brute_force")(G, AggregationContext(n_byzantine=1))
    torch.testing.assert_close(result.update, torch.tensor([4.0 / 3.0]))
    torch.testing.assert_close(result.credit, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    G5 = torch.tensor([[0.0], [2.0], [3.0], [7.0], [8.0]])
    # f = 2: subsets of 3; {0,2,3}: 3, {2,3,7}: 5, {3,7,8}: 5, {2,7,8}: 6, all others larger -> mean 5/3
    result = make_aggregator("brute_force")(G5, AggregationContext(n_byzantine=2))
    torch.testing.assert_close(result.update, torch.tensor([5.0 / 3.0]))


def test_geomed_medoid_hand_example():
    G = torch.tensor([[0.0], [1.0], [5.0], [6.0], [20.0]])
    # sums of distances: 0 -> 1+5+6+20 = 32, 1 -> 1+4+5+19 = 29, 5 -> 5+4+1+15 = 25,
    #                    6 -> 6+5+1+14 = 26, 20 -> 20+19+15+14 = 68   => row 2 (value 5)
    result = make_aggregator("geomed")(G)
    torch.testing.assert_close(result.update, torch.tensor([5.0]))
    torch.testing.assert_close(result.credit, torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))


def test_geometric_median_hand_examples():
    rule = GeometricMedian(tol=1e-12, max_iter=1000)
    # collinear points: the geometric median is the 1-D median, the middle point (1, 0)
    line = rule(torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(line.update, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(line.credit[1]) > 0.99
    # triangle with an angle >= 120 degrees at (0, 0) (vectors (1, 0) and (-1, 0.1): ~174 degrees):
    # the Fermat point is that vertex
    obtuse = rule(torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.1]], dtype=torch.float64))
    torch.testing.assert_close(obtuse.update, torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    # square corners: by symmetry the centre (1, 1), equal weights 1/4
    square = rule(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(square.update, torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(square.credit, torch.full((4,), 0.25, dtype=torch.float64))


def test_krum_hand_example_squared_and_plain():
    G = torch.tensor([[0.0], [4.0], [7.0], [12.0], [13.0]])
    ctx = AggregationContext(n_byzantine=1)  # n - f - 2 = 2 neighbours
    # squared: 0 -> 16+49 = 65, 4 -> 9+16 = 25, 7 -> 9+25 = 34, 12 -> 1+25 = 26, 13 -> 1+36 = 37  => row 1
    squared = Krum()(G, ctx)
    torch.testing.assert_close(squared.update, torch.tensor([4.0]))
    torch.testing.assert_close(squared.credit, torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))
    # plain:   0 -> 4+7 = 11,   4 -> 3+4 = 7,   7 -> 3+5 = 8,   12 -> 1+5 = 6,   13 -> 1+6 = 7   => row 3
    plain = Krum(squared=False)(G, ctx)
    torch.testing.assert_close(plain.update, torch.tensor([12.0]))


def test_multi_krum_hand_example():
    G = torch.tensor([[0.0], [1.0], [2.0], [9.0], [10.0]])
    # f = 1, 2 neighbours, squared: 0 -> 1+4 = 5, 1 -> 1+1 = 2, 2 -> 1+4 = 5, 9 -> 1+49 = 50, 10 -> 1+64 = 65
    # m = 3 lowest: rows 1, 0, 2 -> mean (0+1+2)/3 = 1
    result = MultiKrum(m=3)(G, AggregationContext(n_byzantine=1))
    torch.testing.assert_close(result.update, torch.tensor([1.0]))
    torch.testing.assert_close(result.credit, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]))
    # default m = n - f = 4: rows 1, 0, 2, 3 -> (0+1+2+9)/4 = 3
    torch.testing.assert_close(MultiKrum()(G, AggregationContext(n_byzantine=1)).update, torch.tensor([3.0]))


def test_bulyan_hand_example():
    G = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [100.0]])
    # n = 7, f = 1: theta = 5 Krum picks, beta = 3. Squared distances; exact score ties go to the
    # smaller sum of squared distances to the remaining rows (SS).
    # pick 1 (k = 4): scores 0:1+4+9+16 = 30, 1:15, 2:1+1+4+4 = 10, 3:1+1+4+4 = 10, 4:15, 5:30, 100: huge
    #   tie 2/3: SS(2) = 4+1+1+4+9+98² = 9623, SS(3) = 9+4+1+1+4+97² = 9428 -> 3
    # pick 2 (k = 3 among {0,1,2,4,5,100}): 0:1+4+16 = 21, 1:1+1+9 = 11, 2:1+4+4 = 9, 4:1+4+9 = 14,
    #   5:1+9+16 = 26 -> 2
    # pick 3 (k = 2 among {0,1,4,5,100}): 0:1+16 = 17, 1:1+9 = 10, 4:1+9 = 10, 5:1+16 = 17
    #   tie 1/4: SS(1) = 1+9+16+99² = 9827, SS(4) = 16+9+1+96² = 9242 -> 4
    # pick 4 (k = 1 among {0,1,5,100}): 0:1, 1:1, 5:16;
    #   tie 0/1: SS(0) = 1+25+100² = 10026, SS(1) = 1+16+99² = 9818 -> 1
    # pick 5 (k = 1 among {0,5,100}): 0:25, 5:25; SS(0) = 25+10000 = 10025, SS(5) = 25+95² = 9050 -> 5
    # selected values {1,2,3,4,5}: median 3, the 3 closest are 2, 3, 4 -> mean 3
    torch.testing.assert_close(Bulyan()(G, AggregationContext(n_byzantine=1)).update, torch.tensor([3.0]))


def test_bulyan_coordinate_step_hand_examples():
    # column (1, 3, 4, 6, 10): median 4, distances 3, 1, 0, 2, 6 -> 3 closest: 4, 3, 6 -> 13/3
    # column (1, 2, 3, 10): median (2 + 3)/2 = 2.5, distances 1.5, .5, .5, 7.5 -> 2 closest: 2, 3 -> 2.5
    odd = closest_to_median_mean(torch.tensor([[1.0], [3.0], [4.0], [6.0], [10.0]]), 3)
    even = closest_to_median_mean(torch.tensor([[1.0], [2.0], [3.0], [10.0]]), 2)
    torch.testing.assert_close(odd, torch.tensor([13.0 / 3.0]))
    torch.testing.assert_close(even, torch.tensor([2.5]))


def test_median_hand_examples():
    G = torch.tensor([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0], [3.0, 1.0]])
    # columns sorted: (1, 2, 3, 100) -> (2 + 3)/2 = 2.5;  (-5, 0, 1, 10) -> (0 + 1)/2 = 0.5
    torch.testing.assert_close(make_aggregator("median")(G).update, torch.tensor([2.5, 0.5]))
    # odd n: (3, 1, 2) -> 2
    torch.testing.assert_close(make_aggregator("median")(torch.tensor([[3.0], [1.0], [2.0]])).update,
                               torch.tensor([2.0]))


def test_trimmed_mean_hand_examples():
    G = torch.tensor([[1.0, -7.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])
    # f = 1 drops the min and max of each column: (2+3+4)/3 = 3;  (0+1+2)/3 = 1
    ctx = AggregationContext(n_byzantine=1)
    torch.testing.assert_close(TrimmedMean()(G, ctx).update, torch.tensor([3.0, 1.0]))
    # trim_ratio 0.2 with n = 5 -> b = floor(1.0) = 1, same result, independent of f
    torch.testing.assert_close(TrimmedMean(trim_ratio=0.2)(G).update, torch.tensor([3.0, 1.0]))
    # trim_ratio 0.4 -> b = 2: only the middle value stays: 3 and 1
    torch.testing.assert_close(TrimmedMean(trim_ratio=0.4)(G).update, torch.tensor([3.0, 1.0]))
    # f = 0: plain mean (1+2+3+4+100)/5 = 22, (-7+0+1+2+3)/5 = -0.2
    torch.testing.assert_close(TrimmedMean()(G).update, torch.tensor([22.0, -0.2]))


def test_centered_clipping_hand_example_and_state():
    G = torch.tensor([[0.5, 0.0], [0.0, 4.0]], dtype=torch.float64)
    rule = CenteredClipping(tau=1.0)
    # v0 = 0: (0.5, 0) has norm 0.5 <= 1, kept; (0, 4) clipped to (0, 1) -> v = ((0.5 + 0)/2, (0 + 1)/2)
    first = rule(G)
    torch.testing.assert_close(first.update, torch.tensor([0.25, 0.5], dtype=torch.float64))
    assert first.credit is None
    # next call starts from the stored v = (0.25, 0.5): row (2.25, 0.5) differs by (2, 0) -> clipped to (1, 0)
    second = rule(torch.tensor([[2.25, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(second.update, torch.tensor([1.25, 0.5], dtype=torch.float64))
    # after reset, v0 = 0: (2.25, 0.5) has norm sqrt(5.3125) -> scaled to unit length
    rule.reset()
    norm = math.sqrt(2.25**2 + 0.5**2)
    third = rule(torch.tensor([[2.25, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(third.update, torch.tensor([2.25 / norm, 0.5 / norm], dtype=torch.float64))
    # ctx.previous_update wins over the state: start at (0, 4), the second row is the centre itself
    fourth = rule(G, AggregationContext(previous_update=torch.tensor([0.0, 4.0], dtype=torch.float64)))
    # (0.5, 0) - (0, 4) = (0.5, -4), norm sqrt(16.25) -> scaled by 1/sqrt(16.25); (0, 4) - (0, 4) = 0
    s = 1.0 / math.sqrt(16.25)
    expected = torch.tensor([0.5 * s / 2, 4.0 - 4.0 * s / 2], dtype=torch.float64)
    torch.testing.assert_close(fourth.update, expected)


def test_centered_clipping_two_iterations_by_hand():
    G = torch.tensor([[0.5, 0.0], [0.0, 4.0]], dtype=torch.float64)
    # iteration 1 as above: v1 = (0.25, 0.5)
    # iteration 2: (0.5, 0) - v1 = (0.25, -0.5), norm sqrt(0.3125) < 1 kept;
    #              (0, 4) - v1 = (-0.25, 3.5), norm sqrt(12.3125) > 1, scaled by 1/sqrt(12.3125)
    s = 1.0 / math.sqrt(12.3125)
    expected = [0.25 + (0.25 - 0.25 * s) / 2, 0.5 + (-0.5 + 3.5 * s) / 2]
    result = CenteredClipping(tau=1.0, n_iter=2)(G)
    torch.testing.assert_close(result.update, torch.tensor(expected, dtype=torch.float64))


def test_fltrust_hand_examples():
    G = torch.tensor([[3.0, 4.0], [-1.0, -1.0], [0.0, 0.0]])
    ctx = AggregationContext(quasi_grad=torch.tensor([0.0, 2.0]))
    # cos: (3,4)·(0,2)/(5·2) = 0.8;  (-1,-1): negative -> 0;  zero row -> 0.  credit (1, 0, 0)
    # rescaled row 1: (3, 4) · ||g0|| / 5 = (1.2, 1.6)
    result = FLTrust()(G, ctx)
    torch.testing.assert_close(result.credit, torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(result.update, torch.tensor([1.2, 1.6]))
    # two trusted rows: (2, 0) cos 1/sqrt(2) with g0 = (1, 1), (0, 3) cos 1/sqrt(2): equal trust 1/2 each;
    # rescaled to sqrt(2): (sqrt 2, 0) and (0, sqrt 2) -> mean (sqrt(2)/2, sqrt(2)/2)
    ctx = AggregationContext(quasi_grad=torch.tensor([1.0, 1.0]))
    two = FLTrust()(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), ctx)
    torch.testing.assert_close(two.credit, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(two.update, torch.full((2,), math.sqrt(2) / 2))


def test_fltrust_with_no_trusted_row_returns_zero_update_and_zero_credit():
    G = torch.tensor([[-1.0, 0.0], [0.0, -2.0]])
    result = FLTrust()(G, AggregationContext(quasi_grad=torch.tensor([1.0, 1.0])))  # both cosines < 0
    assert torch.equal(result.update, torch.zeros(2))
    assert torch.equal(result.credit, torch.zeros(2))
    zero_g0 = FLTrust()(torch.tensor([[1.0, 0.0]]), AggregationContext(quasi_grad=torch.zeros(2)))
    assert torch.equal(zero_g0.update, torch.zeros(2))


def test_zeno_hand_example():
    theta = torch.tensor([1.0, 1.0], dtype=torch.float64)  # f_B(θ) = ½||θ||² = 1

    def lookahead(updates: torch.Tensor) -> torch.Tensor:  # lr = 0.1 inside, as the context promises
        return 0.5 * ((theta - 0.1 * updates) ** 2).sum(dim=1)

    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-5.0, -5.0], [3.0, 3.0]], dtype=torch.float64)
    ctx = AggregationContext(n_byzantine=2, quasi_loss=1.0, quasi_loss_after_step=lookahead, lr=0.1)
    # after steps: (0.9, 1) -> 0.905, (1, 0.9) -> 0.905, (1.5, 1.5) -> 2.25, (0.7, 0.7) -> 0.49
    # rho = 0: scores 0.095, 0.095, -1.25, 0.51 -> keep n - b = 2: rows 3 and 0 (tie 0/1 -> lowest index)
    result = Zeno(rho=0.0)(G, ctx)
    torch.testing.assert_close(result.credit, torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(result.update, torch.tensor([2.0, 1.5], dtype=torch.float64))
    # rho = 0.1 penalises ||g||^2: 0.095 - 0.1 = -0.005 (rows 0, 1), -1.25 - 5 (row 2), 0.51 - 1.8 = -1.29
    # -> rows 0 and 1 kept: mean (0.5, 0.5)
    penalised = Zeno(rho=0.1)(G, ctx)
    torch.testing.assert_close(penalised.update, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # explicit b overrides f: b = 3 keeps only the best row, (3, 3)
    best_only = Zeno(rho=0.0, b=3)(G, ctx)
    torch.testing.assert_close(best_only.update, torch.tensor([3.0, 3.0], dtype=torch.float64))


# --------------------------------------------------------------------------- degenerate inputs


def full_context(d: int, f: int = 0, row: torch.Tensor | None = None) -> AggregationContext:
    """Every field set; quasi_grad points along ``row`` if given (so FLTrust trusts that row)."""
    base = quadratic_context(d, f, dtype=torch.float32)
    g0 = row.clone() if row is not None else base.quasi_grad
    return AggregationContext(n_byzantine=f, quasi_grad=g0, quasi_loss=base.quasi_loss,
                              quasi_loss_after_step=base.quasi_loss_after_step, lr=base.lr)


@pytest.mark.parametrize("name", ALL_RULES)
def test_single_row_is_returned(name):
    row = torch.tensor([[0.3, -1.2, 2.0]])
    kwargs = {"tau": 100.0} if name == "centered_clipping" else {}
    result = make_aggregator(name, **kwargs)(row, full_context(3, row=row[0]))
    torch.testing.assert_close(result.update, row[0])
    if result.credit is not None:
        torch.testing.assert_close(result.credit, torch.ones(1))


@pytest.mark.parametrize("name", ALL_RULES)
def test_all_equal_rows_return_that_row(name):
    row = torch.tensor([0.25, -1.5, 4.0, 0.0])
    G = row.repeat(7, 1)
    kwargs = {"tau": 100.0} if name == "centered_clipping" else {}
    result = make_aggregator(name, **kwargs)(G, full_context(4, f=1, row=row))
    torch.testing.assert_close(result.update, row)
    if result.credit is not None:
        assert math.isclose(float(result.credit.sum()), 1.0, rel_tol=1e-6)


def test_bulyan_window_step_matches_sorting_by_distance_across_chunks():
    gen = torch.Generator().manual_seed(3)
    block = torch.sort(torch.randn(9, 40_000, generator=gen), dim=0).values  # > one 16384-column chunk
    beta = 5
    # independent computation: median of 9 = 5th value; sort |x - m| per column, average the 5 nearest
    med = block[4]
    order = torch.argsort((block - med).abs(), dim=0)[:beta]
    expected = torch.gather(block, 0, order).mean(dim=0)
    torch.testing.assert_close(closest_to_median_mean(block, beta), expected)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "bulyan", "krum", "geomed", "geometric_median"])
def test_chunked_kernels_give_the_same_result_as_one_chunk(name, monkeypatch):
    G = random_rows(7, 11, 37, dtype=torch.float32)
    ctx = AggregationContext(n_byzantine=2)
    whole = make_aggregator(name)(G, ctx)
    monkeypatch.setattr(ops, "_SORT_CHUNK_ELEMS", 40)  # a few columns per sorted chunk
    monkeypatch.setattr(ops, "_GRAM_CHUNK_COLS", 5)
    chunked = make_aggregator(name)(G, ctx)
    torch.testing.assert_close(chunked.update, whole.update)


def test_torch_sort_fallback_matches_numpy_path():
    G = random_rows(5, 9, 6)
    leaf = G.clone().requires_grad_(True)  # numpy cannot view it: torch.sort is used
    for name in ("median", "trimmed_mean", "bulyan"):
        ctx = AggregationContext(n_byzantine=1)
        torch.testing.assert_close(make_aggregator(name)(leaf, ctx).update.detach(),
                                   make_aggregator(name)(G, ctx).update)


def test_distances_survive_a_large_common_offset():
    gen = torch.Generator().manual_seed(0)
    small = torch.randn(6, 1000, generator=gen, dtype=torch.float64)
    G = (small + 1e4).to(torch.float32)  # |x|² ~ 1e11, the plain formula cancels in float32
    exact = torch.cdist(G.double(), G.double(), compute_mode="donot_use_mm_for_euclid_dist") ** 2
    torch.testing.assert_close(pairwise_sq_distances(G), exact, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ALL_RULES)
@SETTINGS
@given(data=st.data())
def test_non_finite_rows_are_absent(name, data):
    n_finite = data.draw(st.integers(min_n(name), 8), label="n_finite")
    n_bad = data.draw(st.integers(1, 3), label="n_bad")
    d = data.draw(st.integers(1, 4), label="d")
    f = data.draw(st.integers(0, max(0, min(max_f(name, n_finite), 1))), label="f")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    finite_rows = random_rows(seed, n_finite, d, dtype=torch.float32)
    bad = torch.zeros(n_bad, d)
    for i in range(n_bad):
        bad[i, data.draw(st.integers(0, d - 1), label="bad column")] = data.draw(
            st.sampled_from([NAN, INF, -INF]), label="bad value")
    order = torch.tensor(data.draw(st.permutations(range(n_finite + n_bad)), label="order"))
    G = torch.cat([finite_rows, bad])[order]
    is_bad = order >= n_finite
    ctx = full_context(d, f)
    with_bad = make_aggregator(name)(G, ctx)
    clean = make_aggregator(name)(G[~is_bad], ctx)
    assert bool(torch.isfinite(with_bad.update).all())
    torch.testing.assert_close(with_bad.update, clean.update)
    if clean.credit is None:
        assert with_bad.credit is None
    else:
        assert bool((with_bad.credit[is_bad] == 0).all())
        torch.testing.assert_close(with_bad.credit[~is_bad], clean.credit)


@pytest.mark.parametrize("name", ALL_RULES)
def test_all_rows_non_finite_give_zero_update(name):
    G = torch.tensor([[NAN, 1.0], [INF, 0.0], [0.0, -INF]])
    result = make_aggregator(name)(G, full_context(2, f=1))
    assert torch.equal(result.update, torch.zeros(2))
    if result.credit is not None:
        assert torch.equal(result.credit, torch.zeros(3))


def test_finite_row_mask_handles_overflowing_sums():
    G = torch.tensor([[3e38, 3e38], [1.0, NAN], [-INF, INF], [0.0, 0.0]])
    assert finite_row_mask(G).tolist() == [True, False, False, True]


# --------------------------------------------------------------------------- errors


def test_krum_precondition_message():
    G = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"Krum needs n >= 2f \+ 3, got n=4, f=1"):
        Krum()(G, AggregationContext(n_byzantine=1))
    with pytest.raises(ValueError, match=r"Multi-Krum needs n >= 2f \+ 3, got n=4, f=1"):
        MultiKrum()(G, AggregationContext(n_byzantine=1))
    with pytest.raises(ValueError, match=r"Krum needs n >= 2f \+ 3, got n=2, f=0"):
        Krum()(torch.zeros(2, 2))
    # strict=False only needs n >= f + 3: n = 4, f = 1 -> one neighbour per score
    G = torch.tensor([[0.0], [1.0], [5.0], [9.0]])
    # squared scores with 1 neighbour: 0 -> 1, 1 -> 1, 5 -> 16, 9 -> 16; tie 0/1 broken by the sum of
    # squared distances to all rows: 0 -> 1 + 25 + 81 = 107, 1 -> 1 + 16 + 64 = 81 -> row 1
    torch.testing.assert_close(Krum(strict=False)(G, AggregationContext(n_byzantine=1)).update,
                               torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"n >= f \+ 3"):
        Krum(strict=False)(G, AggregationContext(n_byzantine=2))


def test_bulyan_precondition_message():
    with pytest.raises(ValueError, match=r"Bulyan needs n >= 4f \+ 3, got n=6, f=1"):
        Bulyan()(torch.zeros(6, 2), AggregationContext(n_byzantine=1))
    with pytest.raises(ValueError, match=r"Bulyan needs n >= 4f \+ 3, got n=50, f=25"):
        Bulyan()(torch.zeros(50, 2), AggregationContext(n_byzantine=25))


def test_rules_that_cannot_tolerate_half_byzantine_raise():
    G = torch.randn(4, 3)
    ctx = AggregationContext(n_byzantine=2)  # f = n/2
    with pytest.raises(ValueError, match="trimmed_mean needs n > 2b"):
        TrimmedMean()(G, ctx)
    with pytest.raises(ValueError, match=r"brute_force needs n >= 2f \+ 1, got n=4, f=2"):
        make_aggregator("brute_force")(G, ctx)
    with pytest.raises(ValueError, match="zeno needs b < n"):
        Zeno(b=4)(G, full_context(3, f=2))
    # brute_force with strict=False runs as long as one row is kept (the paper's beta = 0.5 runs)
    relaxed = make_aggregator("brute_force", strict=False)(G, ctx)
    assert int((relaxed.credit > 0).sum()) == 2


def test_brute_force_subset_limit():
    G = torch.randn(20, 2)
    ctx = AggregationContext(n_byzantine=5)  # C(20, 5) = 15504
    with pytest.raises(ValueError, match=r"C\(n=20, f=5\) = 15504 subsets, more than max_subsets=1000"):
        make_aggregator("brute_force", max_subsets=1000)(G, ctx)
    assert make_aggregator("brute_force", max_subsets=20000)(G, ctx).credit.shape == (20,)
    with pytest.raises(ValueError, match=r"C\(n=50, f=10\) = 10272278170 subsets"):
        make_aggregator("brute_force")(torch.randn(50, 2), AggregationContext(n_byzantine=10))


def test_missing_context_fields():
    G = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"fltrust needs ctx.quasi_grad"):
        FLTrust()(G)
    with pytest.raises(ValueError, match=r"fltrust: ctx.quasi_grad must have shape \(3,\)"):
        FLTrust()(G, AggregationContext(quasi_grad=torch.zeros(4)))
    with pytest.raises(ValueError, match=r"zeno needs ctx.quasi_loss "):
        Zeno()(G, AggregationContext(quasi_loss_after_step=lambda u: u.sum(dim=1)))
    with pytest.raises(ValueError, match=r"zeno needs ctx.quasi_loss_after_step"):
        Zeno()(G, AggregationContext(quasi_loss=1.0))
    with pytest.raises(ValueError, match=r"must return shape \(5,\)"):
        Zeno()(G, AggregationContext(quasi_loss=1.0, quasi_loss_after_step=lambda u: u.sum()))
    with pytest.raises(ValueError, match=r"centered_clipping: ctx.previous_update must have shape \(3,\)"):
        CenteredClipping()(G, AggregationContext(previous_update=torch.zeros(2)))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("geometric_median", {"tol": -1.0}, r"tol must be a real number in \[0.0, inf\), got -1.0"),
    ("geometric_median", {"max_iter": 0}, r"max_iter must be an integer >= 1, got 0"),
    ("geometric_median", {"eps": 0.0}, r"eps must be a real number in \(0.0, inf\), got 0.0"),
    ("krum", {"squared": "yes"}, r"squared must be True or False, got 'yes'"),
    ("multi_krum", {"m": 0}, r"m must be an integer >= 1, got 0"),
    ("trimmed_mean", {"trim_ratio": 0.5}, r"trim_ratio must be a real number in \[0.0, 0.5\), got 0.5"),
    ("centered_clipping", {"tau": 0.0}, r"tau must be a real number in \(0.0, inf\), got 0.0"),
    ("centered_clipping", {"n_iter": 1.5}, r"n_iter must be an integer >= 1, got 1.5"),
    ("zeno", {"rho": -0.1}, r"rho must be a real number in \[0.0, inf\), got -0.1"),
    ("zeno", {"b": -1}, r"b must be an integer >= 0, got -1"),
    ("brute_force", {"max_subsets": 0}, r"max_subsets must be a whole number >= 1, got 0"),
])
def test_hyperparameter_validation(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_aggregator(name, **kwargs)


def test_hyperparameters_are_keyword_only():
    with pytest.raises(TypeError):
        GeometricMedian(1e-6)  # type: ignore[misc]


def test_call_validation():
    with pytest.raises(ValueError, match="must be an integer >= 0, got -1"):
        Krum()(torch.zeros(5, 2), AggregationContext(n_byzantine=-1))
    with pytest.raises(ValueError, match="floating-point"):
        make_aggregator("median")(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"shape \[n>=1, d\]"):
        make_aggregator("mean")(torch.zeros(3))
    with pytest.raises(ValueError, match=r"m must be <= n, got m=9, n=5"):
        MultiKrum(m=9)(torch.randn(5, 2))
    rule = CenteredClipping()
    rule(torch.randn(3, 4))
    with pytest.raises(ValueError, match="call reset"):
        rule(torch.randn(3, 5))


def test_repr_shows_hyperparameters_only():
    assert repr(CenteredClipping(tau=2.0, n_iter=3)) == "CenteredClipping(tau=2.0, n_iter=3)"
