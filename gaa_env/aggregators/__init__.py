"""Robust gradient aggregation rules: a registry of small vectorized callables.

Every rule maps received gradients ``G[n, d]`` and an :class:`AggregationContext` to an
:class:`AggregationResult` (update ``[d]`` and, for convex combinations, credit ``α[n]``).
"""

from gaa_env.aggregators import mean  # noqa: F401  (registers the rule)
from gaa_env.aggregators.base import AggregationContext, AggregationResult, Aggregator
from gaa_env.aggregators.registry import AGGREGATORS, make_aggregator, register_aggregator

__all__ = [
    "AGGREGATORS",
    "AggregationContext",
    "AggregationResult",
    "Aggregator",
    "make_aggregator",
    "register_aggregator",
]
