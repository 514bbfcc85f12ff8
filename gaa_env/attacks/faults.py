"""Broken workers: rows of ``+inf`` or NaN (ByzFL's ``Inf``; the classic crash-with-garbage fault).

The simulator treats a received row with any non-finite entry as *absent*: it is zeroed, flagged in
``RoundGradients.finite`` / ``info["nonfinite_workers"]``, and gets credit 0 (the rest renormalised),
so these attacks test the plumbing and the agents' handling of missing workers rather than robustness.
"""

from __future__ import annotations

import torch

from gaa_env.attacks.tampering import TamperContext, Tampering, register_tampering


@register_tampering("inf")
class InfFault(Tampering):
    """Send a row of ``+inf`` (ByzFL ``Inf``). No parameters.

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(2), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> InfFault()(torch.ones(2, 2), torch.tensor([True, False]), ctx)
    tensor([[inf, inf],
            [1., 1.]])
    """

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return torch.full((int(active.sum()), honest.shape[1]), float("inf"), dtype=honest.dtype)


@register_tampering("nan")
class NaNFault(Tampering):
    """Send a row of NaN. No parameters.

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(2), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> NaNFault()(torch.ones(2, 2), torch.tensor([False, True]), ctx)
    tensor([[1., 1.],
            [nan, nan]])
    """

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return torch.full((int(active.sum()), honest.shape[1]), float("nan"), dtype=honest.dtype)
