"""Tests of the detection procedures GeoMed+ / GAA+ and of their precision/recall."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaa_env.aggregators import detection_scores, gaa_plus, geomed_plus

NAN = float("nan")


def test_geomed_plus_hand_example():
    G = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [30.0, 40.0]])
    # distances: d01 = 3, d02 = 4, d03 = 50, d12 = 5, d13 = sqrt(27² + 40²) = sqrt(2329) ≈ 48.26,
    #            d23 = sqrt(30² + 36²) = sqrt(2196) ≈ 46.86
    # round 1 sums: 0: 3+4+50 = 57, 1: 3+5+48.26 = 56.26, 2: 4+5+46.86 = 55.86, 3: 50+48.26+46.86 = 145.1 -> 3
    # round 2 on {0,1,2}: 0: 3+4 = 7, 1: 3+5 = 8, 2: 4+5 = 9 -> 2
    # round 3 on {0,1}: both 3 -> tie, lowest index 0
    flagged = geomed_plus(G, 3)
    assert flagged.dtype == torch.long
    assert flagged.tolist() == [3, 2, 0]
    assert geomed_plus(G, 0).tolist() == []
    assert geomed_plus(G, 4).tolist() == [3, 2, 0, 1]


def test_geomed_plus_uses_the_remaining_set_not_the_initial_one():
    G = torch.tensor([[0.0], [3.0], [10.0], [16.0], [18.0]])
    # round 1 sums: 0: 3+10+16+18 = 47, 3: 3+7+13+15 = 38, 10: 10+7+6+8 = 31, 16: 16+13+6+2 = 37,
    #               18: 18+15+8+2 = 43 -> index 0 (ranking these sums once would flag 18 next)
    # round 2 on {3,10,16,18}: 3: 7+13+15 = 35, 10: 7+6+8 = 21, 16: 13+6+2 = 21, 18: 15+8+2 = 25 -> index 1
    assert geomed_plus(G, 2).tolist() == [0, 1]


def test_geomed_plus_flags_non_finite_rows_first():
    G = torch.tensor([[0.0], [NAN], [1.0], [50.0], [float("inf")]])
    assert geomed_plus(G, 1).tolist() == [1]
    # after the two non-finite rows, the finite ones: 0: 1+50 = 51, 1.0: 1+49 = 50, 50: 50+49 = 99 -> index 3
    assert geomed_plus(G, 3).tolist() == [1, 4, 3]


def test_gaa_plus_smallest_credits():
    credit = torch.tensor([0.30, 0.05, 0.40, 0.05, 0.20])
    # sorted: 0.05 (1), 0.05 (3), 0.20 (4), 0.30 (0), 0.40 (2); ties by lowest index
    assert gaa_plus(credit, 2).tolist() == [1, 3]
    assert gaa_plus(credit, 3).tolist() == [1, 3, 4]
    assert gaa_plus(credit, 0).tolist() == []
    assert gaa_plus(credit, 0).dtype == torch.long


@settings(max_examples=40, deadline=None)
@given(credits=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12), data=st.data())
def test_gaa_plus_returns_k_indices_no_larger_than_any_unflagged(credits, data):
    k = data.draw(st.integers(0, len(credits)), label="k")
    credit = torch.tensor(credits, dtype=torch.float64)
    flagged = gaa_plus(credit, k).tolist()
    assert len(flagged) == k == len(set(flagged))
    others = [credits[i] for i in range(len(credits)) if i not in flagged]
    assert all(credits[i] <= min(others, default=float("inf")) for i in flagged)


def test_detection_scores_hand_examples():
    byz = torch.tensor([True, False, True, False, False])
    # flagged {0, 1}: one of two flags is Byzantine (precision 1/2), one of two Byzantine found (recall 1/2)
    assert detection_scores(torch.tensor([0, 1]), byz) == {"precision": 0.5, "recall": 0.5}
    # flagged {2, 0, 4}: 2 of 3 flags right, both Byzantine found
    assert detection_scores(torch.tensor([2, 0, 4]), byz) == {"precision": 2 / 3, "recall": 1.0}


def test_detection_scores_empty_cases():
    byz = torch.tensor([True, False, False])
    # k = 0: no false alarm -> precision 1 by convention; nothing found -> recall 0
    assert detection_scores(torch.tensor([], dtype=torch.long), byz) == {"precision": 1.0, "recall": 0.0}
    none = torch.zeros(3, dtype=torch.bool)
    # no Byzantine worker: nothing to miss -> recall 1; every flag is a false alarm -> precision 0
    assert detection_scores(torch.tensor([1]), none) == {"precision": 0.0, "recall": 1.0}
    assert detection_scores(torch.tensor([], dtype=torch.long), none) == {"precision": 1.0, "recall": 1.0}


def test_detection_end_to_end_with_far_byzantine_rows():
    gen = torch.Generator().manual_seed(0)
    honest = torch.rand(8, 5, generator=gen)
    byzantine = torch.full((2, 5), 100.0) + torch.rand(2, 5, generator=gen)
    G = torch.cat([honest[:3], byzantine[:1], honest[3:], byzantine[1:]])  # Byzantine at 3 and 9
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[3, 9]] = True
    assert sorted(geomed_plus(G, 2).tolist()) == [3, 9]
    assert detection_scores(geomed_plus(G, 2), mask) == {"precision": 1.0, "recall": 1.0}


def test_detection_errors():
    G = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, n=3\], got 4"):
        geomed_plus(G, 4)
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, n=3\], got -1"):
        gaa_plus(torch.zeros(3), -1)
    with pytest.raises(ValueError, match="NaN"):
        gaa_plus(torch.tensor([0.1, NAN]), 1)
    with pytest.raises(ValueError, match="distinct"):
        detection_scores(torch.tensor([1, 1]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        detection_scores(torch.tensor([2]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="bool vector"):
        detection_scores(torch.tensor([0]), torch.tensor([1, 0]))
