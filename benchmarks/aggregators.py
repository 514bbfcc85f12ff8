"""Wall-clock benchmark of the aggregation rules (prints Markdown tables, asserts nothing).

Three tables:

1. every rule at the paper's MNIST and CIFAR-10 sizes, ``n = 50`` workers, ``d = 25,450`` and
   ``d = 11,173,962`` (float32): honest rows ``μ + 0.1·N(0, I)``, ``f = 10`` Byzantine rows sending
   the paper's random fault (RF: 0.5 + N(0, (2e-6)²));
2. scaling with ``n ∈ {10, 50, 100}`` at ``d = 25,450`` (``f = min(n // 5, (n − 3) // 4)``);
3. inside both: for Krum, Bulyan and GeoMed, the time of a straightforward ``torch.cdist``-based
   reference written below, and the ratio ``reference / ours`` (>= 1 means ours is at least as
   fast) plus the largest absolute difference between the two outputs.

Times are the median over repeats of one call, after one warm-up call for the small problems.
Zeno's look-ahead is a quadratic loss evaluated in O(nd) — its cost in a real run is ``n``
forward passes of the model, which this benchmark does not measure.

Usage::

    python benchmarks/aggregators.py            # everything (about 5 minutes on 2 cores)
    python benchmarks/aggregators.py --quick    # fewer repeats, no d = 11M references
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from gaa_env.aggregators import AGGREGATORS, AggregationContext, make_aggregator

SMALL_D = 25_450  # MNIST MLP 784-32-10
BIG_D = 11_173_962  # CIFAR-10 ResNet-18
GIB = 1 << 30


# --------------------------------------------------------------------------- references


def reference_krum(G: torch.Tensor, f: int) -> torch.Tensor:
    """Krum with ``torch.cdist``: squared distances, sort each row, sum the n − f − 2 nearest."""
    n = G.shape[0]
    D = torch.cdist(G, G) ** 2
    scores = D.sort(dim=1).values[:, 1:n - f - 1].sum(dim=1)  # column 0 is the distance to itself
    return G[scores.argmin()]


def reference_geomed(G: torch.Tensor, f: int) -> torch.Tensor:
    """Medoid with ``torch.cdist``."""
    return G[torch.cdist(G, G).sum(dim=1).argmin()]


def reference_bulyan(G: torch.Tensor, f: int) -> torch.Tensor:
    """Bulyan with ``torch.cdist``, a Krum loop on the sub-matrix, ``kthvalue`` medians and ``topk``."""
    n = G.shape[0]
    theta, beta = n - 2 * f, n - 4 * f
    D = torch.cdist(G, G) ** 2
    remaining = list(range(n))
    selected = []
    for _ in range(theta):
        r = len(remaining)
        if r == 1:
            selected.append(remaining.pop())
            continue
        k = min(max(r - f - 2, 1), r - 1)
        sub = D[remaining][:, remaining]
        scores = sub.sort(dim=1).values[:, 1:k + 1].sum(dim=1)
        low = scores.min()
        if int((scores <= low + 1e-5 * low.abs()).sum()) > 1:
            TIES["bulyan"] = True  # ours breaks such ties by summed distances, this keeps the lowest index
        selected.append(remaining.pop(int(scores.argmin())))
    S = G[selected]
    lo = S.kthvalue((theta + 1) // 2, dim=0).values
    hi = S.kthvalue(theta // 2 + 1, dim=0).values
    med = 0.5 * lo + 0.5 * hi
    idx = (S - med).abs().topk(beta, dim=0, largest=False).indices
    return S.gather(0, idx).mean(dim=0)


TIES: dict[str, bool] = {}

REFERENCES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "krum": reference_krum,
    "bulyan": reference_bulyan,
    "geomed": reference_geomed,
}


def reference_extra_bytes(name: str, n: int, d: int, f: int) -> int:
    """Peak memory of a reference beyond G (float32): cdist's matrix-multiply path copies both
    inputs with two extra columns; Bulyan adds the selected rows, |S − med|, topk values/indices."""
    cdist = 2 * n * (d + 2) * 4
    if name != "bulyan":
        return cdist
    theta, beta = n - 2 * f, n - 4 * f
    return max(cdist, 2 * theta * d * 4 + beta * d * (4 + 8) + beta * d * 4)


# --------------------------------------------------------------------------- problem


def make_problem(n: int, d: int, f: int, seed: int) -> tuple[torch.Tensor, AggregationContext]:
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=gen)
    G = torch.randn(n, d, generator=gen).mul_(0.1).add_(mean)  # honest rows: a common mean plus noise
    G[:f] = 0.5 + 2e-6 * torch.randn(f, d, generator=gen)  # RF attack rows
    theta = torch.randn(d, generator=gen)
    lr = 0.05

    def lookahead(updates: torch.Tensor) -> torch.Tensor:  # f_B(θ) = ½||θ||² after θ − λu, in O(nd)
        sq_norms = torch.linalg.vector_norm(updates, dim=1) ** 2
        return 0.5 * (theta @ theta) - lr * (updates @ theta) + 0.5 * lr**2 * sq_norms

    ctx = AggregationContext(n_byzantine=f, quasi_grad=theta.clone(), quasi_loss=float(0.5 * (theta @ theta)),
                             quasi_loss_after_step=lookahead, lr=lr)
    return G, ctx


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field)) / (1 << 20)


def peak_extra_gib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory of one call beyond what was resident before it (Linux only: resets
    the high-water mark through /proc/self/clear_refs); None where that is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status_gib("VmRSS:")
        fn()
        return _status_gib("VmHWM:") - before
    except (OSError, StopIteration):
        return None


def time_calls(fns: list[Callable[[], object]], repeats: int, warmup: bool) -> list[float]:
    """Median wall time of each callable; the callables are interleaved in every repeat so that
    ours and the reference see the same background load (the 2 cores are shared)."""
    if warmup:
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def skip_reason(name: str, n: int, d: int, f: int, mem_limit: float) -> str | None:
    if name == "brute_force" and math.comb(n, f) > 1_000_000:
        return f"skipped: C({n},{f}) = {math.comb(n, f):.2e} subsets > 1e6"
    if name == "bulyan" and n < 4 * f + 3:
        return f"skipped: n < 4f + 3 (n={n}, f={f})"
    if name in ("krum", "multi_krum") and n < 2 * f + 3:
        return f"skipped: n < 2f + 3 (n={n}, f={f})"
    # every rule here works in column chunks: beyond G it needs O(n² + n·chunk + d) memory
    if n * d * 4 > mem_limit:
        return f"skipped: G alone needs {n * d * 4 / GIB:.1f} GiB"
    return None


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:,.2f}"


def bench(n: int, d: int, f: int, repeats: int, with_refs: bool, mem_limit: float, seed: int,
          ) -> list[dict[str, str]]:
    G, ctx = make_problem(n, d, f, seed)
    warmup = d <= SMALL_D
    rows = []
    for name in sorted(AGGREGATORS):
        row = {"rule": name, "n": str(n), "f": str(f), "d": f"{d:,}", "ours_ms": "", "ref_ms": "",
               "ratio": "", "max_abs_diff": "", "mem": "", "note": ""}
        reason = skip_reason(name, n, d, f, mem_limit)
        if reason:
            row["note"] = reason
            rows.append(row)
            continue
        rule = make_aggregator(name)
        if d > SMALL_D:
            peak = peak_extra_gib(lambda rule=rule: rule(G, ctx))
            row["mem"] = "n/a" if peak is None else f"{max(peak, 0.0):.2f}"
        run_ref = False
        if name in REFERENCES:
            extra = reference_extra_bytes(name, n, d, f)
            if not with_refs:
                row["note"] = "reference not run (--quick)"
            elif n * d * 4 + extra > mem_limit:
                row["note"] = f"reference skipped: needs {(n * d * 4 + extra) / GIB:.1f} GiB"
            else:
                run_ref = True
        if not run_ref:
            (ours,) = time_calls([lambda rule=rule: rule(G, ctx)], repeats, warmup)
            row["ours_ms"] = fmt_ms(ours)
        else:
            ref_fn = REFERENCES[name]
            TIES.clear()
            ours, ref = time_calls([lambda rule=rule: rule(G, ctx), lambda ref_fn=ref_fn: ref_fn(G, f)],
                                   repeats, warmup)
            row["ours_ms"] = fmt_ms(ours)
            row["ref_ms"] = fmt_ms(ref)
            row["ratio"] = f"{ref / ours:.2f}x"
            if d <= SMALL_D:  # at d = 11M a third call of each would double the run time
                diff = (ref_fn(G, f) - rule(G, ctx).update).abs().max().item()
                row["max_abs_diff"] = f"{diff:.1e}"
                if TIES and diff > 1e-4:
                    row["note"] = "differs: Krum-score tie in the selection, reference keeps the lowest index"
            else:
                row["max_abs_diff"] = "(not recomputed)"
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict[str, str]]) -> None:
    cols = ["rule", "n", "f", "d", "ours_ms", "ref_ms", "ratio", "max_abs_diff", "mem", "note"]
    heads = ["rule", "n", "f", "d", "ours (ms)", "cdist ref (ms)", "ref / ours", "max abs(ours − ref)",
             "ours: peak GiB beyond G", "note"]
    if not any(row["mem"] for row in rows):
        cols.remove("mem")
        heads.remove("ours: peak GiB beyond G")
    print(f"\n### {title}\n")
    print("| " + " | ".join(heads) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for row in rows:
        print("| " + " | ".join(row[c] for c in cols) + " |")


def machine_label(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical cores (shared), torch {torch.__version__} with "
            f"torch.set_num_threads({threads}), numpy {np.__version__}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats small / 1 big, no d = 11M references")
    parser.add_argument("--repeats", type=int, default=7, help="repeats at d = 25,450 (default 7)")
    parser.add_argument("--big-repeats", type=int, default=2, help="repeats at d = 11,173,962 (default 2)")
    parser.add_argument("--skip-big", action="store_true", help="skip d = 11,173,962")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--mem-limit-gib", type=float, default=8.0, help="skip what needs more (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    big_repeats = 1 if args.quick else args.big_repeats
    mem_limit = args.mem_limit_gib * GIB

    print(f"Machine: {machine_label(args.threads)}")
    print(f"Median of {repeats} calls (after 1 warm-up) at d = {SMALL_D:,}; "
          f"median of {big_repeats} calls (no warm-up) at d = {BIG_D:,}. float32.")
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    rows = bench(50, SMALL_D, 10, repeats, True, mem_limit, args.seed)
    print_table(f"n = 50, f = 10, d = {SMALL_D:,} (MNIST MLP)", rows)
    if not args.skip_big:
        rows = bench(50, BIG_D, 10, big_repeats, not args.quick, mem_limit, args.seed)
        print_table(f"n = 50, f = 10, d = {BIG_D:,} (CIFAR-10 ResNet-18)", rows)
    scaling = []
    for n in (10, 50, 100):
        scaling += bench(n, SMALL_D, min(n // 5, (n - 3) // 4), repeats, True, mem_limit, args.seed)
    print_table(f"Scaling with n at d = {SMALL_D:,}", sorted(scaling, key=lambda r: (r["rule"], int(r["n"]))))
    print(f"\nTotal benchmark time: {time.perf_counter() - start:.0f} s; "
          f"load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"(other jobs share the cores).")


if __name__ == "__main__":
    main()
