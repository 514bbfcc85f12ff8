"""The paper's Adaptive Fault (AF, Sec 5.1.3 / 6.3): an attacker that knows GAA's quasi-validation set.

GAA gives credit to gradients that lower the loss on its small quasi-validation (QV) set B. AF exploits
exactly that: it sends a gradient that *descends* the QV loss (so it looks useful to GAA) while
*ascending* the training loss (so it harms the model everywhere else). The exact loss of Sec 6.3 is not
in the text we have; the formula and knobs follow the authors' code (``adv_loss1`` / ``adv_loss2`` and the
``qv_leaked`` levels) — see ``docs/attacks.md``.
"""

from __future__ import annotations

import math

import torch
from torch.func import grad, vmap

from gaa_env.attacks.omniscient import reference_rows
from gaa_env.attacks.tampering import TamperContext, Tampering, register_tampering

LEAKS = ("exact", "distribution")


@register_tampering("af")
class AdaptiveFault(Tampering):
    """Adaptive Fault: each active worker sends ``∇_θ[ −c_train·L_train(θ) + c_qv·L_QV(θ) ]``.

    ``L_train`` is the worker's loss on its own mini-batch and ``L_QV`` the loss on (its knowledge of) the
    server's quasi-validation set:

    * ``leak="exact"`` (default; the code's level 2): the attacker knows the exact QV samples
      (``ctx.quasi_x``, ``ctx.quasi_y``). ``∇L_train`` is the worker's honest row (its own mini-batch
      gradient — AF does not poison data, so ``honest[active]`` is exactly that), ``∇L_QV`` is computed
      once at θ and shared by all active workers.
    * ``leak="distribution"`` (level 1): the attacker only knows the distribution the QV set is drawn from.
      Each active worker uses the first ``surrogate_size`` samples of its own mini-batch as a stand-in QV
      sample (default: the size of the server's QV set, 8 if unknown) and the rest of its batch as the
      training batch; both gradients for all active workers come from one ``vmap(grad(·))`` call. (With a
      batch of one sample, both terms use that sample.)

    ``c_train`` (1.0) and ``c_qv`` (10.0) are the authors' ``adv_loss1`` weights; ``adv_loss2`` is
    ``c_qv=2`` with ``warmup_rounds=1000``: for rounds ``ctx.round_index < warmup_rounds`` (counted from
    the start of the learning process) the attacker sends the pure QV gradient ``∇L_QV`` to earn credit.
    ``match_norm=True`` rescales every forged row to the norm of the honest mean (honest rows as in
    :mod:`gaa_env.attacks.omniscient`), so the attack cannot be spotted by its magnitude.

    >>> import torch
    >>> from gaa_env.models import FunctionalModel, mlp
    >>> model = FunctionalModel(mlp(2, 3, 2)); theta = model.initial_theta()
    >>> ctx = TamperContext(theta=theta, generator=torch.Generator(), lr=0.05, round_index=0, model=model,
    ...                     quasi_x=torch.ones(1, 2), quasi_y=torch.tensor([1]), n_classes=2)
    >>> honest = torch.zeros(2, model.dim)  # own training gradients (zero here) → sends 10·∇L_QV
    >>> sent = AdaptiveFault()(honest, torch.tensor([True, False]), ctx)
    >>> qv = torch.func.grad(model.loss)(theta, ctx.quasi_x, ctx.quasi_y)
    >>> torch.allclose(sent[0], 10 * qv), bool(sent[1].eq(0).all())
    (True, True)
    """

    def __init__(self, *, leak: str = "exact", c_train: float = 1.0, c_qv: float = 10.0, warmup_rounds: int = 0,
                 match_norm: bool = False, surrogate_size: int | None = None) -> None:
        if leak not in LEAKS:
            raise ValueError(f"af leak must be one of {list(LEAKS)}, got {leak!r}")
        for label, value in (("c_train", c_train), ("c_qv", c_qv)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"af {label} must be finite and >= 0, got {value}")
        if c_train == 0 and c_qv == 0:
            raise ValueError("af c_train and c_qv are both 0; at least one must be > 0")
        if not isinstance(warmup_rounds, int) or isinstance(warmup_rounds, bool) or warmup_rounds < 0:
            raise ValueError(f"af warmup_rounds must be an integer >= 0, got {warmup_rounds!r}")
        if not isinstance(match_norm, bool):
            raise ValueError(f"af match_norm must be a bool, got {match_norm!r}")
        if surrogate_size is not None and (not isinstance(surrogate_size, int) or isinstance(surrogate_size, bool)
                                           or surrogate_size < 1):
            raise ValueError(f"af surrogate_size must be None or an integer >= 1, got {surrogate_size!r}")
        self.leak, self.c_train, self.c_qv = leak, c_train, c_qv
        self.warmup_rounds, self.match_norm, self.surrogate_size = warmup_rounds, match_norm, surrogate_size

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        if ctx.model is None:
            raise ValueError("af needs ctx.model (the attacker differentiates the model's loss)")
        warmup = ctx.round_index < self.warmup_rounds
        c_train, c_qv = (0.0, 1.0) if warmup else (self.c_train, self.c_qv)
        theta = ctx.theta.detach()
        if self.leak == "exact":
            forged = self._exact(honest, active, ctx, theta, c_train, c_qv)
        else:
            forged = self._distribution(active, ctx, theta, c_train, c_qv)
        if self.match_norm:
            target = reference_rows(honest, active).mean(dim=0).norm()
            norms = forged.norm(dim=1, keepdim=True)
            forged = torch.where(norms > 0, forged * (target / norms.clamp_min(1e-30)), forged)
        return forged

    def _exact(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext, theta: torch.Tensor,
               c_train: float, c_qv: float) -> torch.Tensor:
        if ctx.quasi_x is None or ctx.quasi_y is None:
            raise ValueError("af with leak='exact' needs ctx.quasi_x/quasi_y (the leaked quasi-validation set)")
        assert ctx.model is not None
        qv_grad = grad(ctx.model.loss)(theta, ctx.quasi_x, ctx.quasi_y)
        forged = c_qv * qv_grad.unsqueeze(0).expand(int(active.sum()), -1)
        if c_train:
            forged = forged - c_train * honest[active].to(qv_grad.dtype)
        return forged

    def _distribution(self, active: torch.Tensor, ctx: TamperContext, theta: torch.Tensor,
                      c_train: float, c_qv: float) -> torch.Tensor:
        if ctx.batch_x is None or ctx.batch_y is None:
            raise ValueError("af with leak='distribution' needs ctx.batch_x/batch_y (the workers' own mini-batches)")
        model = ctx.model
        assert model is not None
        x, y = ctx.batch_x[active], ctx.batch_y[active]
        batch = y.shape[1]
        size = self.surrogate_size or (len(ctx.quasi_y) if ctx.quasi_y is not None else 8)
        k = min(size, batch - 1) if batch > 1 else 1
        x_qv, y_qv = x[:, :k], y[:, :k]
        x_tr, y_tr = (x[:, k:], y[:, k:]) if batch > 1 else (x, y)

        def objective(t: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor, xt: torch.Tensor,
                      yt: torch.Tensor) -> torch.Tensor:
            return c_qv * model.loss(t, xq, yq) - c_train * model.loss(t, xt, yt)

        return vmap(grad(objective), in_dims=(None, 0, 0, 0, 0))(theta, x_qv, y_qv, x_tr, y_tr)
