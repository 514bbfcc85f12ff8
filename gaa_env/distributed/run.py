"""Run one online agent (GAA, a rule, the oracle, a fixed credit) with worker processes computing the gradients.

Rank 0 is the server: it builds the same environment as ``train_agent.py`` (same ``--env``,
``--env-kwargs``, ``--hyperparams`` and YAML defaults), plugs an :class:`RPCGradientBackend` into
its simulator and plays ``agent.play(env.unwrapped)`` for ``--rounds`` rounds. Ranks ``1..P`` are
worker processes computing the honest gradients of contiguous blocks of the ``n`` simulated workers.
It prints one JSON line: final test accuracy, rounds/s, bytes per round, dead worker processes.

Two ways to start it::

    # P worker processes started here (torch.multiprocessing, localhost, a free port)
    python -m gaa_env.distributed.run --spawn 2 --env GAA-MNIST-v0 --algo mean --env-kwargs beta:0.5 --rounds 200

    # under torchrun (one machine or several): world size = P + 1, rank 0 = the server
    torchrun --standalone --nproc-per-node 3 -m gaa_env.distributed.run --env GAA-MNIST-v0 --algo gaa \\
        --env-kwargs beta:0.5 grad_clip:quasi_norm --rounds 200

Run it from the repository root (the agents package lives there, as for ``train_agent.py``).
See ``docs/distributed.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gaa_env.distributed.rpc_backend import (
    LOG,
    RPCGradientBackend,
    WorkerSpec,
    label_checksum,
    pin_loopback,
    rpc_options,
    run_worker,
    shutdown,
)

FIXED_CREDIT = "credit"


class FixedCreditAgent:
    """Plays the same credit vector every round (``--algo credit --credit 0.2,0.3,...``)."""

    name = FIXED_CREDIT

    def __init__(self, credit: torch.Tensor) -> None:
        if credit.dim() != 1 or not bool(torch.isfinite(credit).all()) or bool((credit < 0).any()) \
                or float(credit.sum()) <= 0:
            raise ValueError(f"--credit must be non-negative finite numbers, not all zero; got {credit.tolist()}")
        self.credit = credit / credit.sum()

    def play(self, env: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        return env.step_with_credit(self.credit)


def parse_fault(text: str) -> tuple[int, int, str]:
    rank, round_index, mode = text.split(":")
    if mode not in ("exit", "hang"):
        raise argparse.ArgumentTypeError(f"fault mode must be exit or hang, got {mode!r}")
    return int(rank), int(round_index), mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gaa_env.distributed.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="mean", help="gaa, a rule (mean, krum, ...), oracle, or 'credit'")
    parser.add_argument("--credit", default=None, help="with --algo credit: comma-separated credit vector (n entries)")
    parser.add_argument("--env", default="GAA-MNIST-v0", help="environment id (default: GAA-MNIST-v0)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE", help="as in train_agent.py")
    parser.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY:VALUE", help="as in train_agent.py")
    parser.add_argument("--hyperparams-file", default=None, help="YAML file instead of hyperparams/<algo>.yml")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the learning process")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and the agent")
    parser.add_argument("--spawn", type=int, default=None, metavar="P",
                        help="start P worker processes here on localhost instead of reading torchrun's RANK/WORLD_SIZE")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="per-round deadline of each worker process; a process that misses it is dropped")
    parser.add_argument("--setup-timeout-s", type=float, default=300.0, help="deadline of a worker's data loading")
    parser.add_argument("--idle-exit-s", type=float, default=900.0,
                        help="a worker process exits after this long without a request from the server")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="torch.save θ trajectory [R+1, d], credits [R, n] and absent rows [R, n] to PATH")
    # testing only, repeatable: RANK:ROUND:exit|hang — that worker process exits / stops answering at ROUND
    parser.add_argument("--test-fault", action="append", default=[], type=parse_fault, help=argparse.SUPPRESS)
    return parser


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The run config exactly as ``train_agent.py`` resolves it (YAML defaults + command line)."""
    from agents.factory import is_sb3
    from train_agent import resolve_config

    if is_sb3(args.algo):
        raise SystemExit(f"error: --algo {args.algo}: SB3 agents train offline; use train_agent.py and deploy "
                         "them with a rule/GAA here")
    namespace = argparse.Namespace(algo=args.algo, env=args.env, env_kwargs=args.env_kwargs,
                                   hyperparams=args.hyperparams, hyperparams_file=args.hyperparams_file,
                                   rounds=args.rounds, seed=args.seed, total_steps=None, eval_rounds=0,
                                   checkpoint_every=0, tensorboard=False)
    return resolve_config(namespace)


def make_agent(args: argparse.Namespace, config: dict[str, Any], n_workers: int) -> Any:
    from agents.factory import make_online_agent

    if args.algo == FIXED_CREDIT:
        if args.credit is None:
            raise SystemExit("error: --algo credit needs --credit c1,c2,...")
        credit = torch.tensor([float(c) for c in args.credit.split(",")])
        if credit.numel() != n_workers:
            raise SystemExit(f"error: --credit has {credit.numel()} entries, the env has n_workers={n_workers}")
        return FixedCreditAgent(credit)
    return make_online_agent(config["algo"], n_workers, config["hyperparams"])


def worker_spec(env_config: Any) -> WorkerSpec:
    from gaa_env.envs.config import BENCHMARKS

    preset = BENCHMARKS[env_config.benchmark]
    name = preset.dataset if env_config.data == "real" else f"{preset.dataset}-synthetic"
    return WorkerSpec(dataset=name, data_dir=env_config.data_dir, normalize=env_config.normalize,
                      model=preset.model, worker_chunk=preset.worker_chunk)


def serve(args: argparse.Namespace, world_size: int, init_method: str) -> dict[str, Any]:
    """Rank 0: build the env, connect the worker processes, play the rounds, return the summary."""
    import torch.distributed.rpc as rpc

    from train_agent import make_env

    config = resolve(args)
    if args.algo == FIXED_CREDIT:
        config["algo"] = FIXED_CREDIT
    rpc.init_rpc("server", rank=0, world_size=world_size,
                 rpc_backend_options=rpc_options(init_method, max(args.timeout_s, args.setup_timeout_s)))
    backend: RPCGradientBackend | None = None
    graceful = False
    try:
        env = make_env(config)
        unwrapped = env.unwrapped
        sim = unwrapped.simulator
        backend = RPCGradientBackend(world_size, sim.n_workers, timeout_s=args.timeout_s,
                                     setup_timeout_s=args.setup_timeout_s)
        setup_start = time.perf_counter()
        backend.setup(worker_spec(unwrapped.config), n_train=len(sim.dataset.y_train),
                      labels=label_checksum(sim.dataset.y_train),
                      faults={rank: (round_index, mode) for rank, round_index, mode in args.test_fault})
        LOG.info("%d worker process(es) ready in %.1f s (data load / warm-up per rank: %s); simulated workers "
                 "per rank: %s", len(backend.live_ranks), time.perf_counter() - setup_start,
                 {r: f"{i['load_s']:.1f}/{i['warmup_s']:.1f} s" for r, i in backend.setup_info.items()},
                 {r: f"{a}..{b - 1}" for r, (a, b) in backend.blocks.items() if r in backend.live_ranks})
        sim.gradient_backend = backend
        agent = make_agent(args, config, sim.n_workers)
        rounds = int(config["rounds"])
        env.reset(seed=config["seed"])
        thetas, credits, absent = [sim.theta.clone()], [], []  # kept only with --record
        start = time.perf_counter()
        for _ in range(rounds):
            played = sim.current
            _, _, terminated, truncated, info = agent.play(unwrapped)
            if args.record:
                thetas.append(sim.theta.clone())
                credits.append(torch.as_tensor(info["credit"]))
                absent.append(~played.finite)
            if terminated or truncated:
                env.reset()
        seconds = time.perf_counter() - start
        sim.evaluate()
        if args.record:
            torch.save({"theta": torch.stack(thetas), "credit": torch.stack(credits), "absent": torch.stack(absent),
                        "dead_ranks": list(backend.dead.values())}, args.record)
        return {"env": config["env"], "algo": config["algo"], "env_kwargs": config["env_kwargs"],
                "n_workers": sim.n_workers, "rounds": rounds, "seconds": seconds,
                "rounds_per_s": rounds / seconds if seconds > 0 else None,
                "test_accuracy": sim.test_accuracy, "dataset": sim.dataset.name, "synthetic": sim.dataset.synthetic,
                **backend.stats()}
    finally:
        if backend is not None:
            graceful = backend.stop_workers()
        else:  # setup never started: the workers still wait for a stop
            _stop_all(world_size)
        shutdown(graceful)


def _stop_all(world_size: int) -> None:
    import torch.distributed.rpc as rpc

    from gaa_env.distributed.rpc_backend import _stop, worker_name

    for rank in range(1, world_size):
        try:
            rpc.rpc_async(worker_name(rank), _stop, timeout=5.0).wait()
        except Exception:  # shutting down anyway
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawned_worker(rank: int, world_size: int, init_method: str, options: dict[str, Any]) -> None:
    sys.path[:0] = [p for p in options.pop("sys_path") if p not in sys.path]
    run_worker(rank, world_size, init_method, **options)


def spawn_main(args: argparse.Namespace) -> dict[str, Any]:
    """``--spawn P``: this process is rank 0; P worker processes on 127.0.0.1, joined (or killed) at the end."""
    import torch.multiprocessing as mp

    if args.spawn < 1:
        raise SystemExit("error: --spawn needs at least 1 worker process")
    pin_loopback("127.0.0.1")
    world_size = args.spawn + 1
    init_method = f"tcp://127.0.0.1:{free_port()}"
    options = {"timeout_s": max(args.timeout_s, args.setup_timeout_s), "idle_exit_s": args.idle_exit_s,
               "parent_pid": os.getpid(), "threads": args.threads, "sys_path": list(sys.path)}
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # read by the children's torch at import
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spawned_worker, args=(rank, world_size, init_method, dict(options)), daemon=True,
                         name=f"gaa-worker{rank}") for rank in range(1, world_size)]
    for proc in procs:
        proc.start()
    try:
        return serve(args, world_size, init_method)
    finally:
        deadline = time.monotonic() + 10.0
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
        for proc in procs:
            if proc.is_alive():
                LOG.warning("worker process %s (pid %s) did not exit; terminating it", proc.name, proc.pid)
                proc.terminate()
                proc.join(3.0)
            if proc.is_alive():
                proc.kill()
                proc.join(3.0)


def torchrun_main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Under torchrun: rank 0 serves, the other ranks are worker processes."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise SystemExit(f"error: {missing} not set: start under torchrun, or use --spawn P")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size < 2:
        raise SystemExit("error: need world size >= 2 (1 server + at least 1 worker process)")
    pin_loopback(os.environ["MASTER_ADDR"])
    if rank == 0:
        return serve(args, world_size, "env://")
    run_worker(rank, world_size, "env://", timeout_s=max(args.timeout_s, args.setup_timeout_s),
               idle_exit_s=args.idle_exit_s, threads=args.threads)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="[server %(levelname)s] %(message)s")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # agents/ and train_agent.py live in the repository root
    try:
        summary = spawn_main(args) if args.spawn is not None else torchrun_main(args)
    except ValueError as err:  # bad env kwargs / hyperparameters: one line, non-zero exit (as train_agent.py)
        raise SystemExit(f"error: {err}") from None
    if summary is not None:
        print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
