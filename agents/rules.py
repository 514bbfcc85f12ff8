"""Every classic aggregation rule as a fixed (non-learning) server agent.

The paper's baselines (mean, Brute-Force, GeoMed, Krum, Bulyan) and the field's (median, trimmed
mean, centered clipping, FLTrust, Zeno, ...) run through the same env loop as learned agents, so
``train_agent.py``/``evaluate.py`` compare them on identical learning processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gaa_env.aggregators import AGGREGATORS, make_aggregator
from gaa_env.envs import GAAEnv

ORACLE = "oracle"


class RuleAgent:
    """Plays ``env.step_with_rule(rule)`` every round; ``reset()``s the rule's state at a fresh process."""

    def __init__(self, rule: str, **rule_kwargs: Any) -> None:
        self.name = rule
        self.rule = make_aggregator(rule, **rule_kwargs)

    def play(self, env: GAAEnv) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if env.simulator.round_index == 0:
            self.rule.reset()
        return env.step_with_rule(self.rule)

    def save(self, path: str | Path) -> None:
        """Fixed rules have nothing to learn; nothing is written."""


class OracleAgent:
    """Zero credit on the workers that are Byzantine this round (ground truth), uniform on the rest.

    Not a defence — an upper reference: what a perfect detector would achieve.
    """

    name = ORACLE

    def play(self, env: GAAEnv) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        current = env.simulator.current
        assert current is not None, "reset the env first"
        honest = (~current.byzantine).float()
        return env.step_with_credit(honest / honest.sum().clamp_min(1.0))

    def save(self, path: str | Path) -> None:
        """Nothing to save."""


def rule_names() -> list[str]:
    return sorted(AGGREGATORS) + [ORACLE]
