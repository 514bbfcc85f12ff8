"""gaa-env: Byzantine-robust distributed learning as a Gymnasium environment.

Importing the package registers the environment ids (idempotently)::

    import gymnasium as gym, gaa_env
    env = gym.make("GAA-MNIST-v0", beta=0.5, attack="pretense")
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

ENV_IDS = {"GAA-MNIST-v0": "mnist", "GAA-CIFAR10-v0": "cifar10", "GAA-Yelp-v0": "yelp",
           "GAA-Healthcare-v0": "healthcare"}

for _env_id, _benchmark in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point="gaa_env.envs:GAAEnv", kwargs={"benchmark": _benchmark})

__all__ = ["ENV_IDS", "__version__"]
