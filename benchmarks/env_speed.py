"""How fast is one environment round, compared to the work it cannot avoid?

Prints, for GAA-MNIST-v0 with n workers (default 50):
* rounds/s of ``env.step`` in ``features`` and ``paper`` observation modes;
* the ratio of one ``features`` step to the bare vectorized computation of the n gradients
  alone (``vmap(grad)`` on the same batches) — target ≤ 1.5x;
* the speed-up of the vectorized per-worker gradients over a Python loop of n backward passes.

Timings are medians over repeats, single-threaded by default (``--threads``) to be comparable
across busy 2-core machines. Run: ``python benchmarks/env_speed.py [--workers 50] [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import gaa_env  # noqa: F401


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=50, help="number of workers n")
    parser.add_argument("--rounds", type=int, default=200, help="timed env steps per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.workers
    print(f"GAA-MNIST-v0, n={n}, batch 64, torch {torch.__version__}, {args.threads} thread(s)")

    step_times = {}
    for mode in ("features", "paper"):
        env = gym.make("GAA-MNIST-v0", n_workers=n, obs_mode=mode, eval_interval=0, horizon=10**9)
        env.reset(seed=0)
        action = np.zeros(n, dtype=np.float32)
        step_times[mode] = median_time(lambda env=env, action=action: env.step(action), args.rounds)
        print(f"  env.step ({mode:8s} obs): {1e3 * step_times[mode]:7.2f} ms  = {1 / step_times[mode]:6.1f} rounds/s")

    sim = env.unwrapped.simulator
    idx = sim.partition.sample(sim.batch_size, sim.generator)
    x, y = sim.dataset.x_train[idx], sim.dataset.y_train[idx]
    bare = median_time(lambda: sim.model.worker_gradients(sim.theta, x, y), args.rounds)
    print(f"  bare vmap(grad) of {n} gradients: {1e3 * bare:7.2f} ms")

    def loop() -> None:
        for i in range(n):
            theta = sim.theta.detach().requires_grad_(True)
            torch.autograd.grad(sim.model.loss(theta, x[i], y[i]), theta)

    looped = median_time(loop, max(args.rounds // 5, 5))
    print(f"  python loop of {n} backward passes: {1e3 * looped:7.2f} ms")
    print(f"ratio env.step(features) / bare gradients: {step_times['features'] / bare:.2f}x  (target <= 1.5x)")
    print(f"ratio env.step(paper) / bare gradients:    {step_times['paper'] / bare:.2f}x")
    print(f"speed-up vectorized over loop:             {looped / bare:.2f}x")


if __name__ == "__main__":
    main()
