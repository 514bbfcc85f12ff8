"""Validated configuration of a :class:`~gaa_env.envs.GAAEnv`, and the benchmark presets.

Every environment kwarg is a field of :class:`GAAConfig`; an unknown kwarg or a bad value raises a
``ValueError`` that names it and lists what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from gaa_env.attacks import PATTERNS, TAMPERINGS
from gaa_env.data import PARTITIONS
from gaa_env.simulator import GRAD_CLIPS

OBS_MODES = ("features", "paper")
DATA_KINDS = ("real", "synthetic")
ACTION_MODES = ("logits", "simplex", "feature_weights")


@dataclass(frozen=True)
class Benchmark:
    """A paper benchmark: dataset, model and its per-benchmark defaults (Table 2, Sec 5.1)."""

    dataset: str
    model: str
    n_workers: int
    batch_size: int
    max_rounds: int
    partition: str = "shared"
    worker_chunk: int | None = None  # workers per vmap call (FunctionalModel.worker_chunk); None: all at once


BENCHMARKS: dict[str, Benchmark] = {
    "mnist": Benchmark(dataset="mnist", model="mnist_mlp", n_workers=50, batch_size=64, max_rounds=5000),
    "cifar10": Benchmark(dataset="cifar10", model="resnet18", n_workers=50, batch_size=64, max_rounds=10000,
                         worker_chunk=10),
    "yelp": Benchmark(dataset="yelp", model="yelp_mlp", n_workers=10, batch_size=256, max_rounds=20000,
                      partition="by_group"),
    "healthcare": Benchmark(dataset="healthcare", model="healthcare_mlp", n_workers=50, batch_size=256,
                            max_rounds=40000, partition="by_group"),
}


@dataclass(frozen=True)
class GAAConfig:
    """All knobs of the environment; defaults follow the paper (see README's kwargs table)."""

    benchmark: str = "mnist"
    beta: float = 0.5
    attack: str = "static"
    tampering: str = "rf"
    attack_params: dict[str, Any] = field(default_factory=dict)
    tampering_params: dict[str, Any] = field(default_factory=dict)
    n_workers: int | None = None
    lr: float = 0.05
    batch_size: int | None = None
    quasi_size: int = 8
    horizon: int = 5
    max_rounds: int | None = None
    persistent: bool = True
    obs_mode: str = "features"
    action_mode: str = "logits"
    logit_scale: float = 10.0
    partition: str | None = None
    dirichlet_alpha: float = 0.5
    grad_clip: str = "none"
    eval_interval: int = 100
    test_size: int | None = None
    normalize: bool = False
    data_dir: str | None = None
    data: str = "real"
    seed: int = 0

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GAAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown environment kwarg(s) {unknown}; allowed: {sorted(known)}")
        return cls(**kwargs).resolved()

    def resolved(self) -> GAAConfig:
        """Fill benchmark defaults and validate every field."""
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; allowed: {sorted(BENCHMARKS)}")
        preset = BENCHMARKS[self.benchmark]
        cfg = GAAConfig(**{**self.__dict__,
                           "n_workers": preset.n_workers if self.n_workers is None else self.n_workers,
                           "batch_size": preset.batch_size if self.batch_size is None else self.batch_size,
                           "max_rounds": preset.max_rounds if self.max_rounds is None else self.max_rounds,
                           "partition": preset.partition if self.partition is None else self.partition})
        cfg._validate()
        return cfg

    def _validate(self) -> None:
        choices = {"attack": (self.attack, sorted(PATTERNS)), "tampering": (self.tampering, sorted(TAMPERINGS)),
                   "obs_mode": (self.obs_mode, OBS_MODES), "action_mode": (self.action_mode, ACTION_MODES),
                   "partition": (self.partition, PARTITIONS), "grad_clip": (self.grad_clip, GRAD_CLIPS),
                   "data": (self.data, DATA_KINDS)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")
        positive_ints = {"n_workers": self.n_workers, "batch_size": self.batch_size, "quasi_size": self.quasi_size,
                         "horizon": self.horizon, "max_rounds": self.max_rounds}
        for name, value in positive_ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        if self.eval_interval < 0:
            raise ValueError(f"eval_interval must be >= 0 (0 disables periodic evaluation), got {self.eval_interval}")
        for name in ("attack_params", "tampering_params"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict of keyword arguments, got {getattr(self, name)!r}")
