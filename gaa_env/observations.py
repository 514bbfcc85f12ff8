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


def _cosine(rows: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (rows @ ref) / (rows.norm(dim=1) * ref.norm()).clamp_min(1e-12)


def feature_observation(round_: RoundGradients, model: FunctionalModel, theta: torch.Tensor, lr: float,
                        quasi_x: torch.Tensor, quasi_y: torch.Tensor, prev_credit: torch.Tensor,
                        previous_update: torch.Tensor | None) -> torch.Tensor:
    """The ``[n, len(FEATURE_NAMES)]`` per-worker feature matrix (float32, finite)."""
    g, qg, loss = round_.received, round_.quasi_grad, round_.quasi_loss
    norms = g.norm(dim=1)
    with torch.no_grad():
        after = model.losses_after_steps(theta, g, lr, quasi_x, quasi_y)
    prev = _cosine(g, previous_update) if previous_update is not None else torch.zeros(len(g))
    columns = [
        _cosine(g, qg),
        torch.log(norms.clamp_min(1e-12) / qg.norm().clamp_min(1e-12)).clamp(-20, 20),
        ((loss - after) / max(loss, 1e-12)).clamp(-1e3, 1e3),
        _cosine(g, g.mean(0)),
        prev,
        prev_credit.to(g.dtype),
        torch.full((len(g),), loss, dtype=g.dtype),
    ]
    features = torch.stack(columns, dim=1).float()
    return torch.nan_to_num(features, nan=0.0, posinf=1e3, neginf=-1e3)
