"""Robust gradient aggregation rules: a registry of small vectorized callables.

Every rule maps received gradients ``G[n, d]`` and an :class:`AggregationContext` to an
:class:`AggregationResult` (update ``[d]`` and, for convex combinations, credit ``α[n]``).
Importing this package registers every rule in :data:`AGGREGATORS`; build one by name with
:func:`make_aggregator`. Rows with non-finite entries are treated as absent (credit 0), see
:class:`Aggregator`.
"""

# Imports that register the rules (one module per rule family).
from gaa_env.aggregators import (  # noqa: F401
    brute_force,
    bulyan,
    clipping,
    coordinatewise,
    fltrust,
    geomed,
    krum,
    mean,
    zeno,
)
from gaa_env.aggregators.base import AggregationContext, AggregationResult, Aggregator
from gaa_env.aggregators.brute_force import BruteForce
from gaa_env.aggregators.bulyan import Bulyan
from gaa_env.aggregators.clipping import CenteredClipping
from gaa_env.aggregators.coordinatewise import Median, TrimmedMean
from gaa_env.aggregators.detection import detection_scores, gaa_plus, geomed_plus
from gaa_env.aggregators.fltrust import FLTrust
from gaa_env.aggregators.geomed import GeoMed, GeometricMedian
from gaa_env.aggregators.krum import Krum, MultiKrum
from gaa_env.aggregators.mean import Mean
from gaa_env.aggregators.registry import AGGREGATORS, make_aggregator, register_aggregator
from gaa_env.aggregators.zeno import Zeno

__all__ = [
    "AGGREGATORS",
    "AggregationContext",
    "AggregationResult",
    "Aggregator",
    "BruteForce",
    "Bulyan",
    "CenteredClipping",
    "FLTrust",
    "GeoMed",
    "GeometricMedian",
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "TrimmedMean",
    "Zeno",
    "detection_scores",
    "gaa_plus",
    "geomed_plus",
    "make_aggregator",
    "register_aggregator",
]
