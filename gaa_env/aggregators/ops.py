"""Numerical kernels shared by the rules: pairwise distances and column-wise sorting.

Both are written for the two shapes the package meets: many small problems (``n <= 100``,
``d ~ 1e4``) and a few huge ones (``n = 50``, ``d ~ 1.1e7`` for ResNet-18), on a CPU.

* Pairwise distances come from the Gram matrix of the *centered* rows, accumulated over column
  chunks in float64: ``||x_i − x_j||² = K_ii + K_jj − 2 K_ij`` with ``K = (G − ḡ)(G − ḡ)ᵀ``.
  Centering removes the common offset that makes the textbook ``||x||² + ||y||² − 2⟨x, y⟩``
  formula (and ``torch.cdist``'s matrix-multiply path) cancel catastrophically when all rows
  share a large component; chunking keeps the extra memory at one ``[n, chunk]`` block.
* Coordinate-wise order statistics sort columns in chunks. On CPU, numpy's SIMD sort is several
  times faster than ``torch.sort``/``torch.median`` along ``dim=0`` (measured: ``[50, 1e6]``
  float32, one thread — ``np.sort(axis=0)`` 0.17 s, ``torch.median(dim=0)`` 0.73 s,
  ``torch.sort(dim=0)`` 1.4 s), so it is used when the tensor is a CPU float32/float64 tensor.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

_GRAM_CHUNK_COLS = 8192
_SORT_CHUNK_ELEMS = 1 << 25


def centered_gram(gradients: torch.Tensor) -> torch.Tensor:
    """``K = (G − ḡ)(G − ḡ)ᵀ`` in float64, ``[n, n]``, accumulated over column chunks.

    >>> centered_gram(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    tensor([[ 1., -1.],
            [-1.,  1.]], dtype=torch.float64)
    """
    n, d = gradients.shape
    center = gradients.mean(dim=0)
    gram = torch.zeros(n, n, dtype=torch.float64, device=gradients.device)
    for start in range(0, d, _GRAM_CHUNK_COLS):
        block = gradients[:, start:start + _GRAM_CHUNK_COLS] - center[start:start + _GRAM_CHUNK_COLS]
        gram += (block @ block.T).to(torch.float64)
    return gram


def sq_distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances from a Gram matrix: symmetric, zero diagonal, clamped at 0."""
    diag = torch.diagonal(gram)
    sq = diag[:, None] + diag[None, :] - 2.0 * gram
    sq = 0.5 * (sq + sq.T)
    sq.clamp_(min=0.0)
    sq.fill_diagonal_(0.0)
    return sq


def pairwise_sq_distances(gradients: torch.Tensor) -> torch.Tensor:
    """``D2[i, j] = ||G_i − G_j||²`` as a float64 ``[n, n]`` matrix (see the module docstring).

    >>> pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[ 0., 25.],
            [25.,  0.]], dtype=torch.float64)
    """
    return sq_distances_from_gram(centered_gram(gradients))


def pairwise_distances(gradients: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = ||G_i − G_j||`` as a float64 ``[n, n]`` matrix.

    >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[0., 5.],
            [5., 0.]], dtype=torch.float64)
    """
    return pairwise_sq_distances(gradients).sqrt_()


def _numpy_sortable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad


def sorted_column_chunks(gradients: torch.Tensor, rows: torch.Tensor | None = None,
                         ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, S)`` where ``S = sort(G[rows, start:stop], dim=0)`` (ascending values).

    Only values are produced (no indices): every coordinate-wise rule here is a function of
    the sorted column, which also makes them exactly invariant to permuting the rows.
    Columns are processed in chunks of about ``2**25`` elements.
    """
    m = gradients.shape[0] if rows is None else int(rows.numel())
    d = gradients.shape[1]
    chunk = max(1, _SORT_CHUNK_ELEMS // max(m, 1))
    use_numpy = _numpy_sortable(gradients)
    source = gradients.numpy() if use_numpy else gradients
    row_index = None
    if rows is not None:
        row_index = rows.cpu().numpy() if use_numpy else rows
    for start in range(0, d, chunk):
        stop = min(d, start + chunk)
        if use_numpy:
            if row_index is None:
                block = np.sort(source[:, start:stop], axis=0)
            else:
                block = source[row_index, start:stop]  # fancy indexing copies
                block.sort(axis=0)
            yield start, stop, torch.from_numpy(block)
        else:
            block = source[:, start:stop] if row_index is None else source[row_index, start:stop]
            yield start, stop, torch.sort(block, dim=0).values


def median_of_sorted(block: torch.Tensor) -> torch.Tensor:
    """Column medians of a column-sorted block; the midpoint of the two middle values for even length."""
    m = block.shape[0]
    lo, hi = (m - 1) // 2, m // 2
    if lo == hi:
        return block[lo].clone()
    return 0.5 * block[lo] + 0.5 * block[hi]  # no overflow for values near the dtype's max


def argmin_rows(primary: torch.Tensor, gradients: torch.Tensor, secondary: torch.Tensor | None = None) -> int:
    """Index of the smallest ``primary`` score, with ties broken so the choice never depends on row order.

    Scores within ``64·eps`` (relative, ``eps`` of the gradients' dtype) of the minimum count as
    tied — mathematically equal scores (e.g. the two middle points of an even number of
    collinear rows for the medoid) differ by rounding noise that depends on the row order.
    Ties go to the smallest ``secondary`` (if given, same tolerance), then to the
    lexicographically smallest row of ``gradients`` (compared at the first coordinate where the
    tied rows differ); identical rows go to the lowest index (they are interchangeable).

    >>> G = torch.tensor([[1.0, 5.0], [1.0, 2.0], [0.0, 9.0]])
    >>> argmin_rows(torch.tensor([3.0, 3.0, 4.0]), G)  # rows 0 and 1 tie; (1, 2) < (1, 5)
    1
    """
    rtol = 64 * torch.finfo(gradients.dtype).eps

    def near_min(values: torch.Tensor) -> torch.Tensor:
        low = values.min()
        return values <= low + rtol * low.abs()

    candidates = near_min(primary).nonzero().squeeze(1)
    if candidates.numel() > 1 and secondary is not None:
        candidates = candidates[near_min(secondary[candidates])]
    best = int(candidates[0])
    for other in candidates[1:].tolist():
        differ = (gradients[other] != gradients[best]).nonzero()
        if differ.numel() and bool(gradients[other, int(differ[0])] < gradients[best, int(differ[0])]):
            best = other
    return best
