"""Gymnasium environments of gaa-env (ids registered in :mod:`gaa_env`)."""

from gaa_env.envs.config import ACTION_MODES, BENCHMARKS, OBS_MODES, Benchmark, GAAConfig
from gaa_env.envs.gaa_env import GAAEnv

__all__ = ["ACTION_MODES", "BENCHMARKS", "OBS_MODES", "Benchmark", "GAAConfig", "GAAEnv"]
