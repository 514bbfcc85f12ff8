"""Byzantine-worker detection: GeoMed+ (Procedure 1) and GAA+ (Procedure 2) of the GAAvernor paper.

Both flag ``K`` workers per round; :func:`detection_scores` compares the flags with the truth.
"""

from __future__ import annotations

import numbers

import torch

from gaa_env.aggregators.base import finite_row_mask
from gaa_env.aggregators.ops import pairwise_distances


def _check_k(k: object, n: int, owner: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise ValueError(f"{owner}: k must be an integer in [0, n={n}], got {k!r}")
    return int(k)


def geomed_plus(gradients: torch.Tensor, k: int) -> torch.Tensor:
    """GeoMed+ (Procedure 1): flag the row farthest (in summed distance) from the rows left, ``k`` times.

    ``O = {}``; repeat ``k`` times: ``i* = argmax_{i ∈ Q} Σ_{j ∈ Q} ||G_i − G_j||``,
    ``O ← O ∪ {i*}``, ``Q ← Q \\ {i*}``. Returns the flagged indices in the order they were
    flagged, as a ``LongTensor[k]``. Ties go to the lowest index. Rows with non-finite entries
    are flagged first (lowest index first), before any finite row.

    >>> G = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    >>> geomed_plus(G, 2)  # sums 13, 11, 11, 27 -> 3; then 3, 2, 3 -> 0
    tensor([3, 0])
    """
    if gradients.ndim != 2:
        raise ValueError(f"geomed_plus: gradients must have shape [n, d], got {tuple(gradients.shape)}")
    n = gradients.shape[0]
    k = _check_k(k, n, "geomed_plus")
    finite = finite_row_mask(gradients)
    flagged = (~finite).nonzero().squeeze(1).tolist()[:k]
    if len(flagged) < k:
        keep = finite.nonzero().squeeze(1)
        dist = pairwise_distances(gradients.index_select(0, keep))
        remaining = torch.ones(keep.numel(), dtype=torch.bool, device=dist.device)
        for _ in range(k - len(flagged)):  # inherently sequential: each removal changes the sums
            sums = (dist * remaining).sum(dim=1)
            sums[~remaining] = -float("inf")
            worst = int(torch.argmax(sums))
            remaining[worst] = False
            flagged.append(int(keep[worst]))
    return torch.tensor(flagged, dtype=torch.long)


def gaa_plus(credit: torch.Tensor, k: int) -> torch.Tensor:
    """GAA+ (Procedure 2): the indices of the ``k`` smallest credits, smallest first (ties: lowest index).

    >>> gaa_plus(torch.tensor([0.4, 0.0, 0.5, 0.1]), 2)
    tensor([1, 3])
    """
    if credit.ndim != 1:
        raise ValueError(f"gaa_plus: credit must be a vector [n], got shape {tuple(credit.shape)}")
    if bool(torch.isnan(credit).any()):
        raise ValueError("gaa_plus: credit has NaN entries")
    k = _check_k(k, credit.numel(), "gaa_plus")
    return torch.argsort(credit, stable=True)[:k].to(torch.long)


def detection_scores(flagged: torch.Tensor, byzantine_mask: torch.Tensor) -> dict[str, float]:
    """Precision and recall of the flagged indices against the true Byzantine set.

    ``precision = |flagged ∩ byz| / |flagged|``, ``recall = |flagged ∩ byz| / |byz|``. Empty
    denominators are vacuous successes: nothing flagged gives precision 1.0 (no false alarm),
    no Byzantine worker gives recall 1.0 (nothing missed). Duplicate or out-of-range indices
    raise ``ValueError``.

    >>> detection_scores(torch.tensor([3, 0]), torch.tensor([False, False, True, True]))
    {'precision': 0.5, 'recall': 0.5}
    """
    if byzantine_mask.ndim != 1 or byzantine_mask.dtype != torch.bool:
        raise ValueError("detection_scores: byzantine_mask must be a bool vector [n]")
    n = byzantine_mask.numel()
    flagged = torch.as_tensor(flagged, dtype=torch.long).reshape(-1)
    if flagged.numel() and (int(flagged.min()) < 0 or int(flagged.max()) >= n):
        raise ValueError(f"detection_scores: flagged indices must be in [0, {n}), got {flagged.tolist()}")
    if torch.unique(flagged).numel() != flagged.numel():
        raise ValueError(f"detection_scores: flagged indices must be distinct, got {flagged.tolist()}")
    hits = int(byzantine_mask[flagged.to(byzantine_mask.device)].sum())
    n_flagged = flagged.numel()
    n_byz = int(byzantine_mask.sum())
    return {
        "precision": hits / n_flagged if n_flagged else 1.0,
        "recall": hits / n_byz if n_byz else 1.0,
    }
