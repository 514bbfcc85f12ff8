"""Attack patterns: *which* compromised workers act Byzantine in *which* round (paper Sec 5.1.2).

A pattern never decides *what* a Byzantine worker sends — that is the tampering's job
(:mod:`gaa_env.attacks.tampering`); the simulator composes the two.

Each pattern is reset with the set of compromised workers (``⌊beta·n⌋`` of them, chosen by the
simulator) and a seeded generator, then asked round by round (0, 1, 2, ...) for the mask of
workers that are Byzantine in that round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch


class AttackPattern:
    """Base: static roles. Subclasses override :meth:`active` (and :meth:`reset` if stateful)."""

    name: str = ""

    def reset(self, compromised: torch.Tensor, generator: torch.Generator) -> None:
        self.compromised = compromised.clone()
        self.generator = generator

    def active(self, round_index: int) -> torch.Tensor:
        """Boolean mask ``[n]`` of the workers that send tampered gradients in ``round_index``."""
        return self.compromised.clone()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("compromised", "generator")
                           and not k.startswith("_"))
        return f"{type(self).__name__}({params})"


PATTERNS: dict[str, type[AttackPattern]] = {}
_P = TypeVar("_P", bound=type[AttackPattern])


def register_pattern(name: str) -> Callable[[_P], _P]:
    def decorate(cls: _P) -> _P:
        cls.name = name
        PATTERNS[name] = cls
        return cls

    return decorate


@register_pattern("none")
class NoAttack(AttackPattern):
    """Nobody attacks: the reference run (the paper's "classical GAR without attack")."""

    def active(self, round_index: int) -> torch.Tensor:
        return torch.zeros_like(self.compromised)


@register_pattern("static")
class Static(AttackPattern):
    """All compromised workers are Byzantine in every round (fixed Byzantine ratio β)."""


@register_pattern("pretense")
class Pretense(AttackPattern):
    """Compromised workers behave benignly for the first ``pretense_rounds`` (L) rounds, then attack.

    The paper's adaptive attack on the RL mechanism: it earns credit first, then abuses it.
    """

    def __init__(self, *, pretense_rounds: int = 250) -> None:
        if pretense_rounds < 0:
            raise ValueError(f"pretense_rounds must be >= 0, got {pretense_rounds}")
        self.pretense_rounds = pretense_rounds

    def active(self, round_index: int) -> torch.Tensor:
        if round_index < self.pretense_rounds:
            return torch.zeros_like(self.compromised)
        return self.compromised.clone()


@register_pattern("randomized")
class Randomized(AttackPattern):
    """Each compromised worker starts Byzantine with probability ``initial_byzantine_prob`` and, every
    ``period`` (p) rounds, flips its role with probability ``flip_prob`` (q), independently.

    Roles are drawn from the simulator's seeded generator, so trajectories are reproducible.
    """

    def __init__(self, *, period: int = 50, flip_prob: float = 0.5, initial_byzantine_prob: float = 0.5) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        for label, value in (("flip_prob", flip_prob), ("initial_byzantine_prob", initial_byzantine_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        self.period, self.flip_prob, self.initial_byzantine_prob = period, flip_prob, initial_byzantine_prob

    def reset(self, compromised: torch.Tensor, generator: torch.Generator) -> None:
        super().reset(compromised, generator)
        draw = torch.rand(compromised.shape, generator=generator) < self.initial_byzantine_prob
        self._roles = draw & compromised
        self._round = 0

    def active(self, round_index: int) -> torch.Tensor:
        if round_index < self._round:
            raise ValueError(f"randomized pattern is sequential: asked for round {round_index} after {self._round}")
        while self._round < round_index:
            self._round += 1
            if self._round % self.period == 0:
                flips = torch.rand(self.compromised.shape, generator=self.generator) < self.flip_prob
                self._roles = (self._roles ^ flips) & self.compromised
        return self._roles.clone()


@register_pattern("periodic")
class Periodic(AttackPattern):
    """Compromised workers alternate: Byzantine for ``period`` rounds, benign for the next ``period``.

    A fluctuating Byzantine ratio with a known period — the setting of the paper's behaviour
    analysis (Sec 4.5.2 / 6.5), where the credit heat-map should show the period.
    """

    def __init__(self, *, period: int = 50) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period

    def active(self, round_index: int) -> torch.Tensor:
        on = (round_index // self.period) % 2 == 0
        return self.compromised.clone() if on else torch.zeros_like(self.compromised)


def make_pattern(name: str, **kwargs: object) -> AttackPattern:
    if name not in PATTERNS:
        raise ValueError(f"unknown attack pattern {name!r}; allowed: {sorted(PATTERNS)}")
    try:
        return PATTERNS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters {sorted(kwargs)} for attack pattern {name!r}: {err}") from None
