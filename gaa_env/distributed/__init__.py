"""Scale-out backend: the simulator's honest gradients computed by worker processes over torch.distributed.rpc.

* :mod:`gaa_env.distributed.round` — what the simulator does with a ``gradient_backend``
  (data poisoning and forging stay at the server; absent worker processes → absent rows).
* :mod:`gaa_env.distributed.rpc_backend` — the parameter-server round over TensorPipe RPC with per-call
  timeouts (server = rank 0, worker processes = ranks 1..P, each a block of simulated workers).
* :mod:`gaa_env.distributed.run` — launcher: ``python -m gaa_env.distributed.run --spawn P ...`` or
  under ``torchrun``.

Importing this package does not import ``torch.distributed``; see ``docs/distributed.md``.
"""
