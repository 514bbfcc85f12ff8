"""Name → rule registry, so environments, agents and CLIs select rules by string."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gaa_env.aggregators.base import Aggregator

AGGREGATORS: dict[str, type[Aggregator]] = {}

_A = TypeVar("_A", bound=type[Aggregator])


def register_aggregator(name: str) -> Callable[[_A], _A]:
    """Class decorator adding a rule to :data:`AGGREGATORS` under ``name``."""

    def decorate(cls: _A) -> _A:
        if name in AGGREGATORS and AGGREGATORS[name] is not cls:
            raise ValueError(f"aggregator {name!r} is already registered by {AGGREGATORS[name].__name__}")
        cls.name = name
        AGGREGATORS[name] = cls
        return cls

    return decorate


def make_aggregator(name: str, **kwargs: object) -> Aggregator:
    """Build the rule registered as ``name`` with its keyword-only hyperparameters."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; allowed: {sorted(AGGREGATORS)}")
    try:
        return AGGREGATORS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters {sorted(kwargs)} for aggregator {name!r}: {err}") from None
