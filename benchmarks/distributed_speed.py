"""Rounds/s of the torch.distributed (RPC) backend vs the in-process simulator, and bytes per round.

For GAA-MNIST-v0 (real MNIST, MLP 784-32-10, d = 25,450, batch 64) and each n in ``--workers``
(default 10 and 50), with the ``mean`` rule as the server agent and evaluation off:

* in-process: ``RuleAgent("mean").play(env)`` in this process (all n gradients in one vmap call);
* backend: ``python -m gaa_env.distributed.run --spawn P`` (1 server + P worker processes over
  TensorPipe RPC on 127.0.0.1), its own rounds/s (setup and warm-up excluded);
* communication per round: θ to each of the P processes + the int64 sample indices, n gradient rows back
  (float32 payload; RPC framing not counted).

Timings are single-threaded per process; on a shared 2-core machine they are noisy — run it twice.
Run: ``python benchmarks/distributed_speed.py [--workers 10 50] [--processes 2] [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

import gaa_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def in_process(n: int, rounds: int) -> float:
    from agents.rules import RuleAgent

    env = gym.make("GAA-MNIST-v0", n_workers=n, beta=0.0, attack="none", eval_interval=0, horizon=10**9).unwrapped
    agent = RuleAgent("mean")
    env.reset(seed=0)
    for _ in range(5):  # warm-up
        agent.play(env)
    start = time.perf_counter()
    for _ in range(rounds):
        agent.play(env)
    return rounds / (time.perf_counter() - start)


def backend(n: int, processes: int, rounds: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "gaa_env.distributed.run", "--spawn", str(processes), "--algo", "mean",
           "--rounds", str(rounds), "--env-kwargs", f"n_workers:{n}", "beta:0.0", "attack:none", "eval_interval:0",
           "horizon:1000000000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:  # its own session: the launcher and its worker processes only
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    if proc.returncode != 0:
        raise SystemExit(f"launcher failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 50], help="numbers of simulated workers n")
    parser.add_argument("--processes", type=int, default=2, help="worker processes P of the backend")
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds per measurement")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per backend run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"GAA-MNIST-v0 (d = 25,450, batch 64), mean rule, torch {torch.__version__}, 1 thread per process, "
          f"{os.cpu_count()} CPU(s); backend = 1 server + {args.processes} worker processes, RPC over 127.0.0.1")
    for n in args.workers:
        local = in_process(n, args.rounds)
        remote = backend(n, args.processes, args.rounds, args.timeout)
        sent, received = remote["bytes_sent_per_round"], remote["bytes_received_per_round"]
        print(f"  n={n:3d}: in-process {local:6.1f} rounds/s | backend {remote['rounds_per_s']:6.1f} rounds/s "
              f"({remote['rounds_per_s'] / local:4.2f}x; per round {1e3 / remote['rounds_per_s']:5.1f} ms, of which "
              f"gather {remote['gather_ms_per_round']:5.1f} ms, slowest process's compute "
              f"{remote['worker_compute_ms_per_round']:5.1f} ms)\n"
              f"         per round: θ+indices sent {sent:,.0f} B, gradients back {received:,.0f} B, "
              f"total {sent + received:,.0f} B")


if __name__ == "__main__":
    main()
