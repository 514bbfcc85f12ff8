"""Tampering algorithms: *what* a Byzantine worker sends (paper Sec 5.1.3 and the field's attacks).

One signature for all: ``tampering(honest, active, ctx) -> received``, where ``honest[n, d]`` are
the gradients every worker would have sent (omniscient attacks read the honest rows of the
round), ``active[n]`` is the pattern's mask for this round, and only the active rows change.
Data-poisoning attacks (label flipping) act earlier, through :meth:`Tampering.poison_batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from gaa_env.models import FunctionalModel


@dataclass(frozen=True)
class TamperContext:
    """What an attacker may know in a round: the model, θ, the server's λ and quasi-validation
    set (adaptive attacks assume it leaked), the workers' mini-batches, and a seeded generator."""

    theta: torch.Tensor
    generator: torch.Generator
    lr: float
    round_index: int
    model: FunctionalModel | None = None
    batch_x: torch.Tensor | None = None
    batch_y: torch.Tensor | None = None
    quasi_x: torch.Tensor | None = None
    quasi_y: torch.Tensor | None = None
    n_classes: int = 10


class Tampering:
    """Base class. Subclasses implement :meth:`forge`, returning the rows to send for the active workers."""

    name: str = ""

    def __call__(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        if not bool(active.any()):
            return honest
        received = honest.clone()
        received[active] = self.forge(honest, active, ctx).to(honest.dtype)
        return received

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        """The ``[active.sum(), d]`` gradients the active Byzantine workers send."""
        raise NotImplementedError

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor,
                     ctx: TamperContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook for data poisoning before gradients are computed; default: data untouched."""
        return x, y

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


TAMPERINGS: dict[str, type[Tampering]] = {}
_T = TypeVar("_T", bound=type[Tampering])


def register_tampering(name: str) -> Callable[[_T], _T]:
    def decorate(cls: _T) -> _T:
        cls.name = name
        TAMPERINGS[name] = cls
        return cls

    return decorate


def _gaussian(shape: tuple[int, ...], mean: float, std: float, ctx: TamperContext) -> torch.Tensor:
    return mean + std * torch.randn(shape, generator=ctx.generator, dtype=ctx.theta.dtype)


@register_tampering("rf")
class RandomFault(Tampering):
    """Random Fault (paper Sec 5.1.3): send ``V ~ N(μ, σ² I)`` with ``μ = mean·1``.

    Defaults are the paper's: ``mean=0.5``, ``std=2e-6`` (essentially the constant vector 0.5·1).

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(3), generator=torch.Generator().manual_seed(0), lr=0.05, round_index=0)
    >>> RandomFault()(torch.zeros(2, 3), torch.tensor([False, True]), ctx)[1].round(decimals=3)
    tensor([0.5000, 0.5000, 0.5000])
    """

    def __init__(self, *, mean: float = 0.5, std: float = 2e-6) -> None:
        if std < 0:
            raise ValueError(f"rf std must be >= 0, got {std}")
        self.mean, self.std = mean, std

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return _gaussian((int(active.sum()), honest.shape[1]), self.mean, self.std, ctx)


@register_tampering("gaussian")
class GaussianNoise(Tampering):
    """Send pure noise ``N(mean, std² I)`` (ByzFL's ``Gaussian``; default ``std=200`` as in Blades)."""

    def __init__(self, *, mean: float = 0.0, std: float = 200.0) -> None:
        if std < 0:
            raise ValueError(f"gaussian std must be >= 0, got {std}")
        self.mean, self.std = mean, std

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return _gaussian((int(active.sum()), honest.shape[1]), self.mean, self.std, ctx)


@register_tampering("sign_flip")
class SignFlip(Tampering):
    """Send the own honest gradient scaled by ``-scale`` (the "Max" attack of the paper's code).

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(2), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> SignFlip()(torch.tensor([[1.0, -2.0], [3.0, 4.0]]), torch.tensor([True, False]), ctx)
    tensor([[-1.,  2.],
            [ 3.,  4.]])
    """

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return -self.scale * honest[active]


def make_tampering(name: str, **kwargs: object) -> Tampering:
    if name not in TAMPERINGS:
        raise ValueError(f"unknown tampering {name!r}; allowed: {sorted(TAMPERINGS)}")
    try:
        return TAMPERINGS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters {sorted(kwargs)} for tampering {name!r}: {err}") from None
