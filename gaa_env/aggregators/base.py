"""The one signature every aggregation rule follows.

A rule sees what a parameter server sees in one round: the stacked received gradients
``G`` of shape ``[n, d]`` and an :class:`AggregationContext` with side information
(the assumed number of Byzantine workers ``f``, the gradient of the quasi-validation loss,
the previous update, a callable that evaluates the quasi-validation loss after a step).
It returns an :class:`AggregationResult`: the update direction ``[d]`` and, when the rule is
a convex combination of the inputs, its credit vector ``alpha`` on the simplex ``S_n`` —
which is what lets a classic rule drive :class:`gaa_env.envs.GAAEnv` as a fixed policy and
what the GAA+/GeoMed+ detection procedures read.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

QuasiLossAfterStep = Callable[[torch.Tensor], torch.Tensor]
"""Maps candidate updates ``U[m, d]`` to ``f_B(theta - lr * U[k])`` for each row: ``[m]``."""


@dataclass(frozen=True)
class AggregationContext:
    """Side information a rule may use. Rules ignore the fields they do not need.

    Attributes:
        n_byzantine: ``f``, the number of Byzantine workers the rule is told to tolerate.
        quasi_grad: ``∇f_B(θ)`` on the server's quasi-validation set B, ``[d]`` (FLTrust, Zeno).
        previous_update: the update applied in the previous round, ``[d]`` (centered clipping).
        quasi_loss: ``f_B(θ)`` at the current parameters (Zeno).
        quasi_loss_after_step: batched look-ahead ``f_B(θ − λ u)`` for candidate updates (Zeno).
        lr: the server learning rate λ used by the look-ahead.
    """

    n_byzantine: int = 0
    quasi_grad: torch.Tensor | None = None
    previous_update: torch.Tensor | None = None
    quasi_loss: float | None = None
    quasi_loss_after_step: QuasiLossAfterStep | None = None
    lr: float = 0.05


@dataclass(frozen=True)
class AggregationResult:
    """What a rule returns.

    Attributes:
        update: the aggregated direction ``[d]``; the server steps ``θ ← θ − λ · update``.
        credit: ``α ∈ S_n`` when ``update == α @ G`` (mean, Brute-Force, Krum, Multi-Krum, GeoMed,
            geometric median, Zeno); FLTrust's ``α`` weights its *rescaled* rows (see
            :class:`~gaa_env.aggregators.fltrust.FLTrust`) and is all zeros when it trusts no row;
            ``None`` for rules that are not convex combinations of whole rows (coordinate-wise
            median, trimmed mean, Bulyan, centered clipping). Absent (non-finite) rows get 0.
    """

    update: torch.Tensor
    credit: torch.Tensor | None = None


class Aggregator:
    """Base class: keyword-only hyperparameters validated in ``__init__``, pure ``__call__``.

    Subclasses set ``name`` and implement :meth:`aggregate`. Stateful rules (centered
    clipping's momentum) override :meth:`reset`.

    :meth:`__call__` applies the conventions every rule shares, so :meth:`aggregate` only ever
    sees finite rows:

    * **Non-finite rows are absent.** A row with any NaN/±Inf entry gets credit 0 and the rule
      runs on the finite rows only; their credit is scattered back to the original indices.
      ``ctx.n_byzantine`` is passed on unchanged, so a rule whose precondition involves ``f``
      (Krum, Bulyan, trimmed mean, ...) raises if ``f`` is too large for the rows that remain.
      If no row is finite the result is the zero update (and zero credit for credit rules).
    * **A single row is returned as is** (credit ``[1]``) when ``f = 0`` and the class sets
      ``single_row_passthrough`` (all rules whose output for one row is that row).

    Class attributes:
        returns_credit: whether :attr:`AggregationResult.credit` is a vector (``False`` for the
            coordinate-wise rules and centered clipping, whose credit is ``None``).
        single_row_passthrough: see above.
    """

    name: str = ""
    returns_credit: ClassVar[bool] = True
    single_row_passthrough: ClassVar[bool] = True

    def __call__(self, gradients: torch.Tensor, ctx: AggregationContext | None = None) -> AggregationResult:
        if gradients.ndim != 2 or gradients.shape[0] < 1:
            raise ValueError(
                f"{self.name}: gradients must have shape [n>=1, d], got {tuple(gradients.shape)}")
        if not gradients.is_floating_point():
            raise ValueError(f"{self.name}: gradients must be a floating-point tensor, got {gradients.dtype}")
        ctx = ctx if ctx is not None else AggregationContext()
        f = ctx.n_byzantine
        if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 0:
            raise ValueError(f"{self.name}: ctx.n_byzantine must be an integer >= 0, got {f!r}")
        finite = finite_row_mask(gradients)
        if bool(finite.all()):
            return self._aggregate_finite(gradients, ctx)
        n = gradients.shape[0]
        zero_credit = gradients.new_zeros(n) if self.returns_credit else None
        if not bool(finite.any()):
            return AggregationResult(update=gradients.new_zeros(gradients.shape[1]), credit=zero_credit)
        keep = finite.nonzero().squeeze(1)
        result = self._aggregate_finite(gradients.index_select(0, keep), ctx)
        credit = None
        if result.credit is not None:
            credit = gradients.new_zeros(n, dtype=result.credit.dtype)
            credit[keep] = result.credit
        return AggregationResult(update=result.update, credit=credit)

    def _aggregate_finite(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        if gradients.shape[0] == 1 and self.single_row_passthrough and ctx.n_byzantine == 0:
            credit = gradients.new_ones(1) if self.returns_credit else None
            return AggregationResult(update=gradients[0].clone(), credit=credit)
        return self.aggregate(gradients, ctx)

    def aggregate(self, gradients: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        """The rule itself, on finite rows ``[n, d]`` (see :meth:`__call__` for the conventions)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state carried across rounds (no-op for stateless rules)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


# --------------------------------------------------------------------------------------------
# Shared helpers: row filtering, hyperparameter validation, context checks, credit vectors.


def finite_row_mask(gradients: torch.Tensor) -> torch.Tensor:
    """``mask[i]`` is True iff row ``i`` has only finite entries.

    Fast path: a finite row sum proves the whole row finite (one reduction instead of a
    ``[n, d]`` boolean tensor); only rows whose sum is NaN/Inf (including finite rows whose sum
    overflowed) are checked entry by entry.

    >>> finite_row_mask(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3e38, 3e38]]))
    tensor([ True, False,  True])
    """
    mask = torch.isfinite(gradients.sum(dim=1))
    if not bool(mask.all()):
        suspect = (~mask).nonzero().squeeze(1)
        mask[suspect] = torch.isfinite(gradients.index_select(0, suspect)).all(dim=1)
    return mask


def check_int(owner: str, name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """Validate an integer hyperparameter; ``ValueError`` names the value and the allowed range."""
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")
    return int(value)


def check_float(owner: str, name: str, value: object, *, low: float, high: float = float("inf"),
                low_open: bool = False, high_open: bool = False) -> float:
    """Validate a real hyperparameter in an interval; ``ValueError`` names the value and the interval."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open or high == float('inf') else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}: {name} must be a real number in {interval}, got {value!r}")
    x = float(value)
    ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok or x != x:
        raise ValueError(f"{owner}: {name} must be a real number in {interval}, got {value!r}")
    return x


def check_bool(owner: str, name: str, value: object) -> bool:
    """Validate a boolean flag."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def require_vector(owner: str, field: str, value: torch.Tensor | None, d: int) -> torch.Tensor:
    """Return ``ctx.<field>`` if it is a finite ``[d]`` tensor, else raise a ``ValueError`` saying so."""
    if value is None:
        raise ValueError(f"{owner} needs ctx.{field} (a [{d}] tensor), but it is None")
    if not isinstance(value, torch.Tensor) or value.shape != (d,):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{owner}: ctx.{field} must have shape ({d},), got {shape}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{owner}: ctx.{field} has non-finite entries")
    return value


def subset_credit(n: int, selected: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Uniform credit ``1/|S|`` on the indices ``selected``, 0 elsewhere (dtype/device of ``like``)."""
    credit = like.new_zeros(n)
    credit[selected] = 1.0 / selected.numel()
    return credit


def one_hot_credit(n: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """Credit 1 on ``index``, 0 elsewhere (dtype/device of ``like``)."""
    credit = like.new_zeros(n)
    credit[index] = 1.0
    return credit
