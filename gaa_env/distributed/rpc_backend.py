"""Parameter-server rounds over ``torch.distributed.rpc`` (TensorPipe; CPU, loopback or LAN).

Rank 0 is the server (``"server"``); ranks ``1..P`` are worker processes (``"worker<rank>"``), each
hosting a contiguous block of the ``n`` simulated workers (:func:`block_ranges`). Every round the
server sends each live worker process ``θ`` and the ``[rows, b]`` sample indices of its block (the
sampling RNG stays on the server, so the trajectory equals the in-process simulator's); the process
answers with the block's honest gradients ``[rows, d]``, computed with the same
``FunctionalModel.worker_gradients`` on its own copy of the dataset.

Why RPC and not collectives: a ``gather``/``all_gather`` blocks until *every* rank takes part, so one
dead or hung worker process stalls the server forever. An RPC has a per-call timeout: a process that
dies (connection error) or does not answer within ``timeout_s`` is declared dead, its rows are NaN
for the round — absent, see :mod:`gaa_env.distributed.round` — a warning names it, and later rounds
do not ask it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed.rpc as rpc

LOG = logging.getLogger("gaa_env.distributed")

SERVER = "server"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def worker_name(rank: int) -> str:
    return SERVER if rank == 0 else f"worker{rank}"


def block_ranges(n_workers: int, n_processes: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` blocks of simulated workers for processes ``1..P`` (sizes differ by ≤ 1)."""
    if n_processes < 1:
        raise ValueError(f"need at least one worker process, got {n_processes}")
    if n_processes > n_workers:
        raise ValueError(f"{n_processes} worker processes for only {n_workers} simulated workers; use at most "
                         f"{n_workers} (world size {n_workers + 1})")
    base, extra = divmod(n_workers, n_processes)
    ranges, start = [], 0
    for p in range(n_processes):
        stop = start + base + (1 if p < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def label_checksum(labels: torch.Tensor) -> int:
    """A cheap fingerprint of a training set's labels (order-sensitive), to catch mismatched data copies."""
    weights = torch.arange(1, len(labels) + 1, dtype=torch.int64) % 1_000_003
    return int((labels.to(torch.int64) * weights).sum())


def rpc_options(init_method: str, timeout_s: float, threads: int = 4) -> rpc.TensorPipeRpcBackendOptions:
    """TensorPipe over TCP (``uv``) with the plain copy channel: no shared memory or CMA needed."""
    # init_rpc's internal Gloo group triggers a deprecation warning that is not ours to fix
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    return rpc.TensorPipeRpcBackendOptions(num_worker_threads=threads, rpc_timeout=timeout_s,
                                           init_method=init_method, _transports=["uv"], _channels=["basic"])


def pin_loopback(master_addr: str) -> None:
    """Keep TensorPipe and Gloo on the loopback interface when the master is local."""
    if master_addr in LOOPBACK or master_addr.startswith("127."):
        os.environ.setdefault("TP_SOCKET_IFNAME", "lo")
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to compute its block's honest gradients (sent by the server)."""

    dataset: str
    data_dir: str | None
    normalize: bool
    model: str
    worker_chunk: int | None
    start: int = 0
    stop: int = 0
    fault_round: int | None = None  # testing: from this round on the process fails (simulated crash/hang) ...
    fault: str = "exit"  # ... "exit": exits at once without a reply; "hang": never answers (until told to stop)


# ----------------------------------------------------------------------------- worker side (ranks 1..P)
_STATE: dict[str, Any] = {"graceful": False}
_STOP = threading.Event()
_LAST_CONTACT = [time.monotonic()]


def _setup(spec: dict[str, Any]) -> dict[str, Any]:
    """Load this process's copy of the dataset and the model (RPC target)."""
    from gaa_env.data import load_dataset
    from gaa_env.models import FunctionalModel, make_model

    _LAST_CONTACT[0] = time.monotonic()
    start = time.perf_counter()
    ws = WorkerSpec(**spec)
    data = load_dataset(ws.dataset, data_dir=ws.data_dir, normalize=ws.normalize)
    model = FunctionalModel(make_model(ws.model), worker_chunk=ws.worker_chunk)
    _STATE.update(spec=ws, x=data.x_train, y=data.y_train, model=model)
    loaded = time.perf_counter()
    # warm-up: the first vmap(grad) call of a process is slow (lazy imports, kernel selection); do it here,
    # not in round 0, whose deadline is the per-round timeout
    model.worker_gradients(model.initial_theta(), data.x_train[:2].unsqueeze(0), data.y_train[:2].unsqueeze(0))
    _LAST_CONTACT[0] = time.monotonic()
    return {"pid": os.getpid(), "n_train": len(data.y_train), "labels": label_checksum(data.y_train),
            "dim": model.dim, "load_s": loaded - start, "warmup_s": time.perf_counter() - loaded}


def _gradients(theta: torch.Tensor, idx: torch.Tensor, round_index: int) -> tuple[torch.Tensor, float]:
    """Honest mini-batch gradients of this process's block at θ for sample indices ``idx[rows, b]``, and the
    seconds they took (RPC target)."""
    _LAST_CONTACT[0] = time.monotonic()
    start = time.perf_counter()
    spec: WorkerSpec = _STATE["spec"]
    if spec.fault_round is not None and round_index >= spec.fault_round:  # testing only
        if spec.fault == "exit":
            os._exit(17)  # a crash without goodbye
        _STOP.wait()  # a hang: no reply; the server's deadline passes
    if torch.get_num_threads() != _STATE["threads"]:  # RPC handler threads may not inherit the setting
        torch.set_num_threads(_STATE["threads"])
    grads = _STATE["model"].worker_gradients(theta, _STATE["x"][idx], _STATE["y"][idx])
    _LAST_CONTACT[0] = time.monotonic()
    return grads, time.perf_counter() - start


def _stop(graceful: bool = False) -> None:
    """Ask this worker process to shut down (RPC target); ``graceful``: every process is alive, say goodbye."""
    _STATE["graceful"] = graceful
    _STOP.set()


def run_worker(rank: int, world_size: int, init_method: str, *, timeout_s: float = 60.0,
               idle_exit_s: float = 900.0, parent_pid: int | None = None, threads: int = 1) -> None:
    """Body of a worker process: serve RPCs until the server says stop, the parent dies or it is idle too long."""
    torch.set_num_threads(threads)
    _STATE["threads"] = threads
    logging.basicConfig(level=logging.INFO, format=f"[worker{rank} %(levelname)s] %(message)s", force=True)
    rpc.init_rpc(worker_name(rank), rank=rank, world_size=world_size,
                 rpc_backend_options=rpc_options(init_method, timeout_s))
    _LAST_CONTACT[0] = time.monotonic()
    try:
        while not _STOP.wait(0.2):
            if parent_pid is not None and os.getppid() != parent_pid:
                LOG.warning("parent process %d is gone; exiting", parent_pid)
                break
            if time.monotonic() - _LAST_CONTACT[0] > idle_exit_s:
                LOG.warning("no request from the server for %.0f s; exiting", idle_exit_s)
                break
    finally:
        shutdown(_STATE["graceful"])


def shutdown(graceful: bool, timeout_s: float = 10.0) -> None:
    """Leave RPC: a graceful goodbye (all processes, bounded by ``timeout_s``) when every process is alive,
    else a local shutdown — a graceful one would wait for the dead."""
    if graceful:
        try:
            rpc.shutdown(graceful=True, timeout=timeout_s)
            return
        except Exception as err:  # fall back to a local shutdown
            LOG.warning("graceful RPC shutdown failed (%s); shutting down locally", err)
    time.sleep(0.1)  # let in-flight replies leave before the agent goes away
    rpc.shutdown(graceful=False)


# ----------------------------------------------------------------------------- server side (rank 0)
class RPCGradientBackend:
    """The simulator's ``gradient_backend`` (``honest_gradients(θ, idx) -> G``) over worker processes.

    Must be used in the rank-0 process after ``rpc.init_rpc("server", rank=0, ...)``.

    Args:
        world_size: 1 server + P worker processes.
        n_workers: simulated workers n, dealt to processes in contiguous blocks.
        timeout_s: per-round, per-process deadline; a process that misses it is declared dead.
        setup_timeout_s: deadline of the one-time dataset/model load in each process.
    """

    def __init__(self, world_size: int, n_workers: int, *, timeout_s: float = 60.0,
                 setup_timeout_s: float = 300.0) -> None:
        self.n_workers, self.timeout_s, self.setup_timeout_s = n_workers, timeout_s, setup_timeout_s
        self.blocks = {rank: block for rank, block in enumerate(block_ranges(n_workers, world_size - 1), start=1)}
        self.dead: dict[int, dict[str, Any]] = {}
        self.rounds = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.gather_seconds = 0.0  # wall time inside honest_gradients (send, wait, copy)
        self.compute_seconds = 0.0  # per round, the slowest process's own gradient time
        self.setup_info: dict[int, dict[str, Any]] = {}

    @property
    def live_ranks(self) -> list[int]:
        return [rank for rank in self.blocks if rank not in self.dead]

    def absent_workers(self) -> list[int]:
        """Simulated workers whose process is dead (their rows are absent)."""
        return sorted(i for rank in self.dead for i in range(*self.blocks[rank]))

    def setup(self, spec: WorkerSpec, *, n_train: int | None = None, labels: int | None = None,
              faults: dict[int, tuple[int, str]] | None = None) -> None:
        """Have every worker process load its data copy and model; check the copies match the server's.

        ``faults`` (testing): ``{rank: (round, "exit" | "hang")}`` — simulated failures of those ranks.
        """
        futures = {}
        for rank, (start, stop) in self.blocks.items():
            fault_round, fault = (faults or {}).get(rank, (None, "exit"))
            payload = asdict(spec) | {"start": start, "stop": stop, "fault_round": fault_round, "fault": fault}
            futures[rank] = rpc.rpc_async(worker_name(rank), _setup, args=(payload,), timeout=self.setup_timeout_s)
        for rank, future in futures.items():
            try:
                info = future.wait()
            except Exception as err:  # any RPC failure means the process is unusable
                self._declare_dead(rank, "setup", err)
                continue
            if (n_train, labels) != (info["n_train"] if n_train is not None else None,
                                     info["labels"] if labels is not None else None):
                raise RuntimeError(f"worker process rank {rank} loaded a different training set "
                                   f"({info['n_train']} samples, label checksum {info['labels']}) than the server "
                                   f"({n_train}, {labels}); point all processes at the same data")
            self.setup_info[rank] = info
        if not self.live_ranks:
            raise RuntimeError("no worker process finished its setup; see the warnings above")

    def honest_gradients(self, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``[n, d]`` honest gradients; rows of dead/late worker processes are NaN (absent)."""
        round_index = self.rounds
        self.rounds += 1
        start_time = time.perf_counter()
        slowest = 0.0
        theta = theta.detach().contiguous()
        out = torch.full((self.n_workers, theta.numel()), float("nan"), dtype=theta.dtype)
        futures = []
        for rank in self.live_ranks:
            start, stop = self.blocks[rank]
            block = idx[start:stop].clone()  # a view would ship the whole storage
            futures.append((rank, start, stop, rpc.rpc_async(worker_name(rank), _gradients,
                                                             args=(theta, block, round_index), timeout=self.timeout_s)))
            self.bytes_sent += theta.numel() * theta.element_size() + block.numel() * block.element_size()
        for rank, start, stop, future in futures:
            try:
                grads, seconds = future.wait()
            except Exception as err:  # timeout, connection reset, remote exception: all "absent"
                self._declare_dead(rank, round_index, err)
                continue
            if tuple(grads.shape) != (stop - start, theta.numel()):
                self._declare_dead(rank, round_index, ValueError(f"reply of shape {tuple(grads.shape)}"))
                continue
            out[start:stop] = grads
            self.bytes_received += grads.numel() * grads.element_size()
            slowest = max(slowest, seconds)
        self.compute_seconds += slowest
        self.gather_seconds += time.perf_counter() - start_time
        return out

    def _declare_dead(self, rank: int, round_index: int | str, err: BaseException) -> None:
        start, stop = self.blocks[rank]
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        self.dead[rank] = {"rank": rank, "workers": list(range(start, stop)), "round": round_index,
                           "reason": reason}
        left = (f"training goes on with ranks {self.live_ranks}" if self.live_ranks else
                "no worker process is left: rounds have no rows and θ stays where it is")
        LOG.warning("worker process rank %d (simulated workers %d..%d) failed at round %s: %s — its workers are "
                    "absent (credit 0) from now on; %s", rank, start, stop - 1, round_index, reason, left)

    def stop_workers(self, timeout_s: float = 5.0) -> bool:
        """Tell every live worker process to exit (errors ignored: it may already be gone).

        Returns True when every process is alive, so all of them (server too) can shut down gracefully.
        """
        graceful = not self.dead
        futures = []
        for rank in self.blocks:  # the dead too: a hung process may still hear it
            try:
                futures.append(rpc.rpc_async(worker_name(rank), _stop, args=(graceful,), timeout=timeout_s))
            except Exception:  # shutting down anyway
                pass
        for future in futures:
            try:
                future.wait()
            except Exception:  # shutting down anyway
                graceful = False
        return graceful

    def stats(self) -> dict[str, Any]:
        rounds = max(self.rounds, 1)
        return {"worker_processes": len(self.blocks), "rounds_gathered": self.rounds,
                "bytes_sent_per_round": self.bytes_sent / rounds,
                "bytes_received_per_round": self.bytes_received / rounds,
                "bytes_per_round": (self.bytes_sent + self.bytes_received) / rounds,
                "gather_ms_per_round": 1e3 * self.gather_seconds / rounds,
                "worker_compute_ms_per_round": 1e3 * self.compute_seconds / rounds,
                "dead_ranks": list(self.dead.values()), "absent_workers": self.absent_workers()}
