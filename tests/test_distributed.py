"""Scale-out backend (gaa_env/distributed): the simulator hook in-process, then real worker processes.

The process tests start ``python -m gaa_env.distributed.run --spawn 2`` (1 server + 2 worker processes,
torch.distributed.rpc over 127.0.0.1) on the synthetic MNIST stand-in with n = 6 simulated workers,
each bounded by a timeout; the whole process group is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import gaa_env  # noqa: F401
from agents.factory import make_online_agent
from gaa_env.distributed.round import absent_rows, poisons_data
from gaa_env.distributed.rpc_backend import block_ranges

ROOT = Path(__file__).resolve().parents[1]
N = 6
BASE = {"n_workers": N, "data": "synthetic", "eval_interval": 0, "test_size": 200}


class LocalBlocks:
    """An in-process stand-in for worker processes: per-block gradients; blocks in ``dead`` answer NaN
    from round ``dead_from`` on (what the RPC backend returns for a dead process)."""

    def __init__(self, sim, blocks, dead=(), dead_from=0) -> None:
        self.sim, self.blocks, self.dead, self.dead_from, self.calls = sim, blocks, set(dead), dead_from, 0

    def __call__(self, theta, idx):
        out = torch.full((idx.shape[0], theta.numel()), float("nan"))
        x, y = self.sim.dataset.x_train, self.sim.dataset.y_train
        for p, (a, b) in enumerate(self.blocks):
            if p in self.dead and self.calls >= self.dead_from:
                continue
            out[a:b] = self.sim.model.worker_gradients(theta, x[idx[a:b]], y[idx[a:b]])
        self.calls += 1
        return out


def make_env(**kwargs):
    return gym.make("GAA-MNIST-v0", **{**BASE, **kwargs}).unwrapped


def play(env, agent, rounds):
    env.reset(seed=0)
    thetas, credits, finite = [env.simulator.theta.clone()], [], []
    for _ in range(rounds):
        played = env.simulator.current
        _, _, terminated, truncated, info = agent.play(env)
        thetas.append(env.simulator.theta.clone())
        credits.append(torch.as_tensor(info["credit"]))
        finite.append(played.finite.clone())
        if terminated or truncated:
            env.reset()
    return torch.stack(thetas), torch.stack(credits), torch.stack(finite)


class FixedCredit:
    def __init__(self, credit):
        self.credit = credit

    def play(self, env):
        return env.step_with_credit(self.credit)


CREDIT = torch.tensor([0.3, 0.1, 0.2, 0.15, 0.05, 0.2])


# ------------------------------------------------------------------------------------------ in-process
def test_block_ranges_contiguous_and_balanced():
    assert block_ranges(6, 2) == [(0, 3), (3, 6)]
    blocks = block_ranges(50, 3)
    assert blocks[0][0] == 0 and blocks[-1][1] == 50
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert {b - a for a, b in blocks} == {16, 17}
    with pytest.raises(ValueError, match="worker processes"):
        block_ranges(2, 3)


def test_poisoning_is_detected_per_tampering():
    from gaa_env.attacks import make_tampering

    assert poisons_data(make_tampering("label_flip"))
    assert not poisons_data(make_tampering("rf")) and not poisons_data(make_tampering("alie"))
    assert absent_rows(torch.tensor([[float("nan")] * 2, [float("nan"), 1.0]])).tolist() == [True, False]


@pytest.mark.parametrize("tampering,beta,agent", [("alie", 0.34, "mean"), ("label_flip", 0.5, "credit"),
                                                  ("rf", 0.2, "krum")])
def test_hook_keeps_the_trajectory(tampering, beta, agent):
    """Honest rows from a block backend (poisoned rows recomputed at the server): same θ trajectory."""
    def make_agent():
        return FixedCredit(CREDIT) if agent == "credit" else make_online_agent(agent, N, {})

    reference = play(make_env(tampering=tampering, beta=beta), make_agent(), 5)
    env = make_env(tampering=tampering, beta=beta)
    env.simulator.gradient_backend = LocalBlocks(env.simulator, block_ranges(N, 2))
    remote = play(env, make_agent(), 5)
    torch.testing.assert_close(remote[0], reference[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(remote[1], reference[1], atol=1e-6, rtol=0)


def test_dead_block_is_absent_forged_rows_included():
    """A dead block's rows are absent, its Byzantine workers' forged rows too; the adversary forges from the rest."""
    env = make_env(tampering="rf", beta=0.5)
    env.simulator.gradient_backend = LocalBlocks(env.simulator, block_ranges(N, 2), dead={1}, dead_from=2)
    thetas, credits, finite = play(env, make_online_agent("mean", N, {}), 5)
    assert finite[:2].all()
    assert not finite[2:, 3:].any() and finite[2:, :3].all()
    assert (credits[2:, 3:] == 0).all() and torch.allclose(credits[2:, :3].sum(1), torch.ones(3))
    assert env.simulator.compromised[3:].any(), "seed 0 must put a Byzantine worker in the dead block"
    assert torch.isfinite(thetas).all()


# ----------------------------------------------------------------------------------- worker processes
def launch(tmp_path: Path, *args: str, processes: int = 2, timeout: float = 60.0) -> tuple[dict, str, dict]:
    """Run the launcher with spawned worker processes; return (summary, stderr, record)."""
    record = tmp_path / "record.pt"
    cmd = [sys.executable, "-m", "gaa_env.distributed.run", "--spawn", str(processes), "--env", "GAA-MNIST-v0",
           "--record", str(record), "--idle-exit-s", "60", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:  # the launcher runs in its own session: this kills it and its workers, nothing else
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    return summary, err, torch.load(record)


def env_args(**kwargs) -> list[str]:
    return ["--env-kwargs", *(f"{k}:{v}" for k, v in {**BASE, **kwargs}.items())]


def test_parity_mean_rule_with_worker_processes(tmp_path):
    summary, _, record = launch(tmp_path, "--algo", "mean", "--rounds", "5", *env_args(tampering="alie", beta=0.34))
    reference = play(make_env(tampering="alie", beta=0.34), make_online_agent("mean", N, {}), 5)
    assert record["theta"].shape == reference[0].shape
    assert float((record["theta"] - reference[0]).abs().max()) <= 1e-5
    assert summary["dead_ranks"] == [] and summary["worker_processes"] == 2
    d = reference[0].shape[1]
    # per round: θ to each of the 2 processes + the int64 indices; n gradient rows back
    assert summary["bytes_received_per_round"] == N * d * 4
    assert summary["bytes_sent_per_round"] == 2 * d * 4 + N * 64 * 8


def test_parity_fixed_credit_with_data_poisoning(tmp_path):
    credit = ",".join(str(float(c)) for c in CREDIT)
    _, _, record = launch(tmp_path, "--algo", "credit", "--credit", credit, "--rounds", "5",
                          *env_args(tampering="label_flip", beta=0.5))
    reference = play(make_env(tampering="label_flip", beta=0.5), FixedCredit(CREDIT), 5)
    assert float((record["theta"] - reference[0]).abs().max()) <= 1e-5


def test_dead_and_hung_worker_processes_are_absent_and_training_goes_on(tmp_path):
    """3 worker processes of 2 simulated workers: rank 3 is killed after round 2 (it exits when asked for
    round 2), rank 1 hangs from round 3 on (no reply within --timeout-s); rank 2 carries on."""
    summary, err, record = launch(tmp_path, "--algo", "mean", "--rounds", "5", "--timeout-s", "4",
                                  "--test-fault", "3:2:exit", "--test-fault", "1:3:hang", *env_args(beta=0.5),
                                  processes=3)
    assert summary["rounds"] == 5
    dead = {d["rank"]: d for d in summary["dead_ranks"]}
    assert sorted(dead) == [1, 3] and dead[3]["round"] == 2 and dead[1]["round"] == 3
    assert dead[3]["workers"] == [4, 5] and dead[1]["workers"] == [0, 1]
    assert "timeout" in dead[1]["reason"]
    assert summary["absent_workers"] == [0, 1, 4, 5]
    assert "worker process rank 3 (simulated workers 4..5) failed at round 2" in err
    assert "worker process rank 1 (simulated workers 0..1) failed at round 3" in err
    credit, absent = record["credit"], record["absent"]
    assert (credit[:2] > 0).all()  # before the crash every worker had credit
    assert (credit[2:, 4:] == 0).all() and absent[2:, 4:].all()  # the killed process's workers, forged rows too
    assert (credit[3:, :2] == 0).all() and absent[3:, :2].all()  # the hung process's workers
    assert (credit[2:, 2:4] > 0).all() and torch.isfinite(record["theta"]).all()
