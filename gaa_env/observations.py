"""What the server's policy reads: the paper's per-coordinate matrix or compact per-worker features.

``paper`` — a ``[d, 3n+2]`` matrix, one row per model coordinate k (paper Sec 5.1.4 and
``docs/observations.md``): for each worker i two preprocessed values of ``G[i, k]``
(Andrychowicz et al. 2016, p = 10), then ``θ[k]``, then ``f_B(θ)``, then the previous credit
``α_{t-1}`` (n columns, the same in every row).

``features`` — an ``[n, k]`` matrix, one row per worker, cheap enough for SB3 replay buffers;
columns are :data:`FEATURE_NAMES`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaa_env.models import FunctionalModel
from gaa_env.simulator import RoundGradients

PREPROCESS_P = 10.0

FEATURE_NAMES = (
    "cos_quasi_grad",      # cos(g_i, ∇f_B(θ)): does following worker i lower the loss on B?
    "log_norm_ratio",      # log(‖g_i‖ / ‖∇f_B(θ)‖), clamped to [-20, 20]
    "lookahead_drop",      # (f_B(θ) − f_B(θ − λ g_i)) / f_B(θ): relative loss drop if only i were followed
    "cos_mean",            # cos(g_i, mean of received rows)
    "cos_prev_update",     # cos(g_i, previous update) (0 in the first round)
    "prev_credit",         # α_{t-1, i}
    "quasi_loss",          # f_B(θ), the same in every row
)


FLOAT32_MAX = float(np.finfo(np.float32).max)
FEATURE_LOW = np.array([-1.0, -20.0, -1e3, -1.0, -1.0, 0.0, 0.0], dtype=np.float32)
FEATURE_HIGH = np.array([1.0, 20.0, 1e3, 1.0, 1.0, 1.0, 1e6], dtype=np.float32)


def paper_bounds(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column bounds of :func:`paper_observation` (log-magnitude/p ≤ 8.9 for float32, sign/small
    branch in [-1, 1], θ and f_B unbounded up to the float32 range, credit in [0, 1])."""
    low = np.concatenate([np.tile([-1.0, -1.0], n), [-FLOAT32_MAX, 0.0], np.zeros(n)]).astype(np.float32)
    high = np.concatenate([np.tile([9.0, 1.0], n), [FLOAT32_MAX, FLOAT32_MAX], np.ones(n)]).astype(np.float32)
    return np.broadcast_to(low, (d, 3 * n + 2)), np.broadcast_to(high, (d, 3 * n + 2))


def preprocess_gradient(x: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """Log-magnitude/sign preprocessing of Andrychowicz et al. (2016), as in the paper's code.

    ``x → (log|x| / p, sign x)`` if ``|x| ≥ e^{-p}``, else ``(-1, e^{p} x)``; output has a trailing
    dimension of 2.
    """
    big = x.abs() >= math.exp(-p)
    log_mag = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    sign = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([log_mag, sign], dim=-1)


def paper_observation(round_: RoundGradients, theta: torch.Tensor, prev_credit: torch.Tensor) -> torch.Tensor:
    """The ``[d, 3n+2]`` per-coordinate matrix (float32)."""
    n, d = round_.received.shape
    grads = preprocess_gradient(round_.received.T).reshape(d, 2 * n)
    loss = torch.full((d, 1), round_.quasi_loss, dtype=torch.float32)
    return torch.cat([grads, theta.reshape(d, 1), loss, prev_credit.reshape(1, n).expand(d, n)], dim=1).float()


def feature_observation(round_: RoundGradients, model: FunctionalModel, theta: torch.Tensor, lr: float,
                        quasi_x: torch.Tensor, quasi_y: torch.Tensor, prev_credit: torch.Tensor,
                        previous_update: torch.Tensor | None) -> torch.Tensor:
    """The ``[n, len(FEATURE_NAMES)]`` per-worker feature matrix (float32, finite, within bounds)."""
    g, loss = round_.received, round_.quasi_loss
    prev = previous_update if previous_update is not None else torch.zeros_like(round_.quasi_grad)
    refs = torch.stack([round_.quasi_grad, g.mean(0), prev])  # one pass over G for all three cosines
    norms, ref_norms = g.norm(dim=1), refs.norm(dim=1)
    cosines = (g @ refs.T) / (norms.unsqueeze(1) * ref_norms).clamp_min(1e-12)
    with torch.no_grad():
        after = model.losses_after_steps(theta, g, lr, quasi_x, quasi_y)
    columns = [
        cosines[:, 0],
        torch.log(norms.clamp_min(1e-12) / ref_norms[0].clamp_min(1e-12)),
        (loss - after) / max(loss, 1e-12),
        cosines[:, 1],
        cosines[:, 2],
        prev_credit.to(g.dtype),
        torch.full((len(g),), loss, dtype=g.dtype),
    ]
    features = torch.nan_to_num(torch.stack(columns, dim=1).float(), nan=0.0)
    return torch.maximum(torch.minimum(features, torch.from_numpy(FEATURE_HIGH)), torch.from_numpy(FEATURE_LOW))


def paper_column_means(round_: RoundGradients, theta: torch.Tensor, prev_credit: torch.Tensor) -> torch.Tensor:
    """Column means of :func:`paper_observation` (``[3n+2]``) without building the ``[d, 3n+2]`` matrix.

    The paper's policy applies one linear layer to every row and averages the rows; by linearity
    that equals the layer applied to these means, so the GAA agent reads only them.
    """
    n = round_.received.shape[0]
    grads = preprocess_gradient(round_.received).mean(dim=1).reshape(2 * n)
    scalars = torch.stack([theta.mean(), torch.tensor(round_.quasi_loss, dtype=theta.dtype)])
    return torch.cat([grads, scalars, prev_credit.to(theta.dtype)]).float()
