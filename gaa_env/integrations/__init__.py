"""Bridges to external federated/distributed-learning frameworks (optional extras).

* :mod:`gaa_env.integrations.flower` — a Flower (``flwr``) strategy that defends a federation with
  any rule of :data:`gaa_env.aggregators.AGGREGATORS` or a trained GAA policy
  (``pip install 'gaa-env[flower]'``).

Nothing here is imported by ``gaa_env`` itself, so the core package never needs these frameworks.
"""
