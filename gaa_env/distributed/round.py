"""What the simulator does with a gradient backend: the server side of one scale-out round.

:meth:`gaa_env.simulator.DistributedSGD.gather` calls :func:`remote_round` instead of computing the
``n`` honest gradients itself when it was given a ``gradient_backend``. The backend only computes
honest rows, ``backend(θ, idx[n, b]) -> G[n, d]`` (or ``backend.honest_gradients(θ, idx)``); a row
that is **entirely NaN** means "this simulated worker's process did not answer" (absent). Everything
the colluding adversary does stays here, at the server, so it keeps using the simulator's RNG and
the honest rows (omniscient attacks), exactly as in-process:

* **Data poisoning** (a tampering that overrides :meth:`Tampering.poison_batch`, e.g. ``label_flip``):
  the active Byzantine rows are recomputed *here* on the poisoned batch the simulator just built;
  worker processes only ever see sample indices and compute honest gradients of clean data.
* **Forging** (every tampering): ``tampering(honest, active, ctx)`` as in-process.
* **Absent rows**: when some rows are absent, the adversary forges from the rows that arrived
  (the tampering is applied to the present rows only), and absent rows stay NaN *after* forging —
  a dead process sends nothing, not even its Byzantine workers' rows. The simulator's existing
  non-finite handling then marks them absent (zero rows, credit 0).

With no absent rows and no poisoning this is exactly ``tampering(backend(θ, idx), active, ctx)``:
the same calls, in the same order, on the same RNG as the in-process round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from gaa_env.attacks import TamperContext, Tampering

if TYPE_CHECKING:
    from gaa_env.simulator import DistributedSGD

GradientFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def backend_function(backend: Any) -> GradientFn:
    """The ``(θ, idx) -> G`` callable of a backend: the object itself or its ``honest_gradients``."""
    method = getattr(backend, "honest_gradients", None)
    if callable(method):
        return method
    if callable(backend):
        return backend
    raise TypeError(f"gradient_backend must be callable (theta, idx) -> G or have .honest_gradients, got {backend!r}")


def poisons_data(tampering: Tampering) -> bool:
    """True when the tampering overrides :meth:`Tampering.poison_batch` (data-poisoning attacks)."""
    return type(tampering).poison_batch is not Tampering.poison_batch


def absent_rows(gradients: torch.Tensor) -> torch.Tensor:
    """``[n]`` True for rows that are entirely NaN — the backend's mark of a worker that did not answer."""
    absent = torch.isnan(gradients[:, 0])  # cheap screen; full check only for the candidates
    if bool(absent.any()):
        absent[absent.clone()] = torch.isnan(gradients[absent]).all(dim=1)
    return absent


def remote_round(sim: DistributedSGD, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 byzantine: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
    """The rows the server receives this round (before sanitising), with honest rows from the backend.

    ``x, y`` are the round's batches after :meth:`Tampering.poison_batch` (used only for poisoned
    rows and for the tampering's context); ``idx`` are the sample indices sent to the workers.
    """
    honest = backend_function(sim.gradient_backend)(sim.theta, idx)
    if tuple(honest.shape) != (sim.n_workers, sim.dim):
        raise ValueError(f"gradient_backend returned shape {tuple(honest.shape)}, expected {(sim.n_workers, sim.dim)}")
    absent = absent_rows(honest)
    if poisons_data(sim.tampering) and bool(byzantine.any()):
        rows = byzantine & ~absent
        if bool(rows.any()):
            honest = honest.clone()
            honest[rows] = sim.model.worker_gradients(sim.theta, x[rows], y[rows]).to(honest.dtype)
    if not bool(absent.any()):
        return sim.tampering(honest, byzantine, ctx)
    received = torch.full_like(honest, float("nan"))
    present = ~absent
    if bool(present.any()):
        sub = dataclasses.replace(ctx, batch_x=None if ctx.batch_x is None else ctx.batch_x[present],
                                  batch_y=None if ctx.batch_y is None else ctx.batch_y[present])
        received[present] = sim.tampering(honest[present], byzantine[present], sub)
    return received
