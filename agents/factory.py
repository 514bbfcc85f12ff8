"""One place that turns ``--algo NAME`` into an agent, shared by train_agent.py and evaluate.py."""

from __future__ import annotations

from typing import Any

from agents.gaa import GAAAgent
from agents.rules import ORACLE, OracleAgent, RuleAgent, rule_names
from agents.sb3 import SB3_ALGOS
from gaa_env.aggregators import AGGREGATORS

ONLINE_LEARNERS = ("gaa",)


def all_algos() -> list[str]:
    """Every ``--algo`` value: the paper's GAA, SB3 algorithms, classic rules and the oracle."""
    return [*ONLINE_LEARNERS, *sorted(SB3_ALGOS), *rule_names()]


def is_sb3(algo: str) -> bool:
    return algo in SB3_ALGOS


def make_online_agent(algo: str, n_workers: int, hyperparams: dict[str, Any]) -> Any:
    """Agents that act round by round from the first round: GAA (learning online) and fixed rules."""
    params = {k: v for k, v in hyperparams.items() if k not in ("rounds", "env_kwargs")}
    if algo == "gaa":
        return GAAAgent(n_workers, **params)
    if algo == ORACLE:
        return OracleAgent()
    if algo in AGGREGATORS:
        return RuleAgent(algo, **params)
    raise ValueError(f"unknown --algo {algo!r}; allowed: {all_algos()}")
