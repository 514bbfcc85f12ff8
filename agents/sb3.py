"""Stable-Baselines3 agents through one factory; hyperparameters in ``hyperparams/<algo>.yml``.

RL-Zoo layout: one YAML file per algorithm, keyed by env id (``default`` applies to every id);
``n_timesteps`` is the default training length, ``env_kwargs`` the default env kwargs, every other
key goes to the algorithm's constructor. Command-line overrides win over the file.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gaa_env.envs import GAAEnv

SB3_ALGOS: dict[str, tuple[str, str]] = {
    "ppo": ("stable_baselines3", "PPO"),
    "sac": ("stable_baselines3", "SAC"),
    "a2c": ("stable_baselines3", "A2C"),
    "td3": ("stable_baselines3", "TD3"),
    "ddpg": ("stable_baselines3", "DDPG"),
    "recurrent_ppo": ("sb3_contrib", "RecurrentPPO"),
}
HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"
META_KEYS = ("n_timesteps", "env_kwargs")


def algo_class(algo: str) -> type:
    if algo not in SB3_ALGOS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; allowed: {sorted(SB3_ALGOS)}")
    module, name = SB3_ALGOS[algo]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise ImportError(f"--algo {algo} needs {module}: pip install 'gaa-env[agents]'") from err


def load_hyperparams(algo: str, env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """The ``default`` entry of the algorithm's YAML updated with the env id's entry."""
    path = Path(path) if path is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        return {}
    table = yaml.safe_load(path.read_text()) or {}
    params = dict(table.get("default") or {})
    params.update(table.get(env_id) or {})
    return params


def make_sb3_model(algo: str, env: Any, hyperparams: dict[str, Any], *, seed: int,
                   tensorboard_log: str | None = None, verbose: int = 0) -> Any:
    kwargs = {k: v for k, v in hyperparams.items() if k not in META_KEYS}
    policy = kwargs.pop("policy", "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy")
    return algo_class(algo)(policy, env, seed=seed, tensorboard_log=tensorboard_log, verbose=verbose, **kwargs)


def save_model_atomic(model: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path.with_suffix(".zip"))


class SB3Agent:
    """A trained SB3 model deployed as a server agent (deterministic actions)."""

    def __init__(self, algo: str, model: Any) -> None:
        self.name, self.model = algo, model
        self._state: Any = None
        self._start = np.ones((1,), dtype=bool)

    @classmethod
    def load(cls, algo: str, path: str | Path) -> SB3Agent:
        return cls(algo, algo_class(algo).load(str(path), device="cpu"))

    def play(self, env: GAAEnv) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs = env.current_observation()
        action, self._state = self.model.predict(obs, state=self._state, episode_start=self._start,
                                                 deterministic=True)
        result = env.step(action)
        self._start = np.array([result[2] or result[3]])
        return result

    def save(self, path: str | Path) -> None:
        save_model_atomic(self.model, path)


def monitor_callback(monitor: Any, checkpoint: Any = None, checkpoint_every: int = 0,
                     stop: Any = None) -> Any:
    """An SB3 callback that feeds each step's env info to a :class:`~agents.monitor.RunMonitor`,
    calls ``checkpoint()`` every ``checkpoint_every`` steps and ends training when ``stop()`` is true."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _MonitorCallback(BaseCallback):
        def _on_step(self) -> bool:
            for reward, info in zip(self.locals["rewards"], self.locals["infos"]):
                monitor.log_round(float(reward), info)
            if checkpoint is not None and checkpoint_every and self.num_timesteps % checkpoint_every == 0:
                checkpoint()
            return not (stop is not None and stop())

    return _MonitorCallback()
