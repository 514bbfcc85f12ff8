"""Per-round time and peak memory of GAA-CIFAR10-v0 (ResNet-18, d = 11,173,962) on CPU.

For each worker count n (default 10 and 50) a fresh child process builds the env on the synthetic
CIFAR-10 stand-in (``data="synthetic"``: same 3072-d inputs and model, no files needed), plays
``--rounds`` rounds with uniform credit and reports, as one JSON line:

* ``setup_s`` (env construction) and ``reset_s`` (reset = the first round's n gradients + observation);
* ``round_s``: each ``env.step`` (apply the update, compute the next round's n per-worker gradients
  with ``vmap(grad)``, tamper, build the observation) and ``grads_s``: the gradient part alone;
* ``peak_rss_gib``: peak resident memory of the child (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
  and ``rss_after_setup_gib`` (dataset + model + the first round).

The n per-worker gradients alone are an ``[n, d]`` float32 matrix (n = 50: 2.08 GiB), but one
``vmap`` over all n workers also holds the ResNet activations of all n·b images at once.
``--worker-chunk k`` vmaps over k workers at a time (``FunctionalModel.worker_chunk``): identical
gradients, activation memory of k·b images. ``--mem-limit-gib`` caps the child's address space
(``RLIMIT_AS``) so a configuration that does not fit fails with an out-of-memory error instead of
invoking the kernel's OOM killer on a shared machine.

Run: ``python benchmarks/cifar_round.py [--workers 10 50] [--rounds 2] [--worker-chunk 10 0]``.
Results on a 2-core CPU are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

GIB = 1024**3


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB on Linux


def child(args: argparse.Namespace) -> dict:
    if args.mem_limit_gib > 0:
        limit = int(args.mem_limit_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import gymnasium as gym
    import numpy as np
    import torch

    import gaa_env  # noqa: F401

    torch.set_num_threads(args.threads)
    n = args.workers[0]
    chunk = args.worker_chunk[0] or None
    result: dict = {"n_workers": n, "batch_size": args.batch_size, "worker_chunk": chunk, "threads": args.threads}
    try:
        start = time.perf_counter()
        env = gym.make("GAA-CIFAR10-v0", data="synthetic", n_workers=n, batch_size=args.batch_size, beta=args.beta,
                       eval_interval=0, test_size=100, obs_mode="features")
        sim = env.unwrapped.simulator
        sim.model.worker_chunk = chunk
        result["setup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        env.reset(seed=0)
        result["reset_s"] = time.perf_counter() - start
        result["rss_after_setup_gib"] = peak_rss_gib()
        gradients = sim.model.worker_gradients
        grad_times: list[float] = []

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = gradients(*a, **k)
            grad_times.append(time.perf_counter() - t0)
            return out

        sim.model.worker_gradients = timed
        action = np.zeros(n, dtype=np.float32)
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            env.step(action)
            rounds.append(time.perf_counter() - start)
        result.update(round_s=rounds, grads_s=grad_times, peak_rss_gib=peak_rss_gib(), dim=sim.dim, ok=True)
    except (MemoryError, RuntimeError) as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}", peak_rss_gib=peak_rss_gib())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 50], help="worker counts n to measure")
    parser.add_argument("--worker-chunk", type=int, nargs="+", default=[10],
                        help="workers per vmap call (default 10, the env preset; 0: all n at once); "
                             "each value is measured for each n")
    parser.add_argument("--batch-size", type=int, default=64, help="per-worker mini-batch (paper: 64)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after reset")
    parser.add_argument("--beta", type=float, default=0.5, help="Byzantine fraction (RF static attack)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--mem-limit-gib", type=float, default=20.0,
                        help="address-space limit of each measuring child (0: none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version()}), flush=True)
    for n in args.workers:
        for chunk in args.worker_chunk:
            cmd = [sys.executable, __file__, "--child", "--workers", str(n), "--worker-chunk", str(chunk),
                   "--batch-size", str(args.batch_size), "--rounds", str(args.rounds), "--beta", str(args.beta),
                   "--threads", str(args.threads), "--mem-limit-gib", str(args.mem_limit_gib)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(json.dumps({"n_workers": n, "worker_chunk": chunk or None, "ok": False,
                                  "returncode": proc.returncode, "stderr": proc.stderr[-500:]}), flush=True)
            else:
                print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
