#!/usr/bin/env python
"""Train (or run) a server agent on a GAA environment; one run = one folder.

Examples::

    python train_agent.py --algo gaa --env GAA-MNIST-v0 --env-kwargs beta:0.5 attack:static tampering:rf
    python train_agent.py --algo gaa --env-kwargs beta:0.5 grad_clip:quasi_norm --rounds 2000
    python train_agent.py --algo ppo --env-kwargs beta:0.5 obs_mode:features --total-steps 20000
    python train_agent.py --algo krum --env-kwargs beta:0.2 --rounds 1000
    python train_agent.py --resume runs/GAA-MNIST-v0_gaa_20261204-120000_s0
    tensorboard --logdir runs/

Online agents (``gaa``, every aggregation rule, ``oracle``) act from the first round of ONE
learning process of ``--rounds`` rounds — GAA learns while it acts, as in the paper's Algorithm 1.
SB3 agents are trained for ``--total-steps`` env steps, then deployed deterministically on a fresh
process of ``--eval-rounds`` rounds. Each run folder holds ``config.yml``, ``round_metrics.csv``,
TensorBoard events (``tb/``), checkpoints (written atomically every ``--checkpoint-every``
rounds and on Ctrl-C), ``credit_heatmap.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def parse_kv(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["beta:0.5", "attack_params:{period: 5}"]`` → ``{"beta": 0.5, ...}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise SystemExit(f"error: {flag} expects key:value pairs, got {pair!r}")
        out[key] = yaml.safe_load(value) if value != "" else None
    return out


def build_parser() -> argparse.ArgumentParser:
    from agents.factory import all_algos

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=all_algos(), help="agent: gaa, an SB3 algorithm, a rule, or oracle")
    parser.add_argument("--env", default="GAA-MNIST-v0", help="environment id (default: GAA-MNIST-v0)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE",
                        help="environment kwargs, e.g. beta:0.5 attack:pretense attack_params:{pretense_rounds: 100}")
    parser.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY:VALUE",
                        help="override hyperparameters of the algorithm's YAML (or a rule's kwargs, e.g. f:10)")
    parser.add_argument("--hyperparams-file", default=None, help="YAML file instead of hyperparams/<algo>.yml")
    parser.add_argument("--rounds", type=int, default=None, help="online agents: rounds of the learning process")
    parser.add_argument("--total-steps", type=int, default=None, help="SB3 agents: training env steps")
    parser.add_argument("--eval-rounds", type=int, default=1000, help="SB3 agents: rounds of the deployment run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and the agent")
    parser.add_argument("--log-dir", default="runs", help="parent folder of run folders (default: runs/)")
    parser.add_argument("--run-name", default=None, help="run folder name (default: ENV_ALGO_TIME_sSEED)")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                        help="write TensorBoard events (default: on)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="rounds/steps between checkpoints (0: off)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return parser


class StopRequest:
    """Ctrl-C asks the loop to stop after the current round (state stays consistent for the
    checkpoint); a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this round and saving a checkpoint (press again to abort)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def write_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    from agents.monitor import write_atomic

    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge YAML hyperparameters, their env_kwargs and the command line into one run config."""
    from agents.factory import is_sb3
    from agents.sb3 import load_hyperparams

    hyper = load_hyperparams(args.algo, args.env, args.hyperparams_file)
    hyper.update(parse_kv(args.hyperparams, "--hyperparams"))
    env_kwargs = dict(hyper.pop("env_kwargs", None) or {})
    env_kwargs.update(parse_kv(args.env_kwargs, "--env-kwargs"))
    env_kwargs.setdefault("seed", args.seed)
    if args.algo == "gaa":
        hyper.setdefault("seed", args.seed)
    if is_sb3(args.algo):
        length = {"total_steps": args.total_steps or int(hyper.pop("n_timesteps", 20000)),
                  "eval_rounds": args.eval_rounds}
    else:
        length = {"rounds": args.rounds or int(hyper.pop("rounds", 1000))}
    hyper.pop("n_timesteps", None), hyper.pop("rounds", None)
    return {"algo": args.algo, "env": args.env, "env_kwargs": env_kwargs, "hyperparams": hyper, "seed": args.seed,
            **length, "checkpoint_every": args.checkpoint_every, "tensorboard": args.tensorboard}


def make_env(config: dict[str, Any]) -> Any:
    import gymnasium as gym

    import gaa_env  # noqa: F401  (registers the ids)

    return gym.make(config["env"], **config["env_kwargs"])


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    import torch

    path = run_dir / "checkpoint.pt"
    tmp = run_dir / "checkpoint.pt.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def truncate_metrics(csv_path: Path, last_round: int) -> None:
    """On resume, drop CSV rows logged after the checkpoint (they will be replayed)."""
    from agents.monitor import write_atomic

    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_round]
    lines = [",".join(r) for r in kept]
    write_atomic(csv_path, "\n".join(lines) + "\n")


def run_online(config: dict[str, Any], run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """GAA / rules / oracle: one learning process of ``rounds`` rounds, checkpointed."""
    import torch

    from agents.factory import make_online_agent
    from agents.gaa import GAAAgent
    from agents.monitor import RunMonitor

    env = make_env(config)
    unwrapped = env.unwrapped
    agent = make_online_agent(config["algo"], unwrapped.config.n_workers, config["hyperparams"])
    start = 0
    env.reset(seed=config["seed"])
    if resume and (run_dir / "checkpoint.pt").exists():
        state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        unwrapped.load_state_dict(state["env"])
        if isinstance(agent, GAAAgent):
            agent = GAAAgent.from_state_dict(state["agent"])
        start = state["rounds_done"]
        truncate_metrics(run_dir / "round_metrics.csv", start)
        print(f"resuming {run_dir} at round {start}", file=sys.stderr)
    monitor = RunMonitor(run_dir, tensorboard=config["tensorboard"])
    rounds, every = config["rounds"], config["checkpoint_every"]

    def checkpoint(done: int) -> None:
        agent_state = agent.state_dict() if isinstance(agent, GAAAgent) else None
        save_checkpoint(run_dir, {"env": unwrapped.state_dict(), "agent": agent_state, "rounds_done": done})
        monitor.flush()

    bar = _progress(rounds, start, progress, config["algo"])
    done = start
    with StopRequest() as stop:
        while done < rounds and not stop.requested:
            _, reward, terminated, truncated, info = agent.play(unwrapped)
            done += 1
            monitor.log_round(reward, info)
            if terminated or truncated:
                env.reset()
            if every and done % every == 0:
                checkpoint(done)
            _advance_bar(bar, reward, info)
    if bar is not None:
        bar.close()
    if done < rounds:
        checkpoint(done)
        monitor.close(extra={"interrupted_at_round": done})
        print(f"interrupted: checkpoint saved in {run_dir}; continue with --resume {run_dir}", file=sys.stderr)
        raise SystemExit(130)
    unwrapped.simulator.evaluate()  # final test accuracy of the trained model
    monitor.last_info = {**monitor.last_info, "test_accuracy": unwrapped.simulator.test_accuracy,
                         "test_accuracy_round": unwrapped.simulator.test_accuracy_round}
    checkpoint(rounds)
    if isinstance(agent, GAAAgent):
        agent.save(run_dir / "gaa_policy.pt")
    monitor.save_heatmap(f"{config['algo']} on {config['env']}: credit per worker and round")
    return monitor.close()


def run_sb3(config: dict[str, Any], run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """SB3: train for ``total_steps`` env steps (logged round by round), then deploy on a fresh process."""
    from agents.monitor import RunMonitor
    from agents.sb3 import SB3Agent, algo_class, make_sb3_model, monitor_callback, save_model_atomic

    env = make_env(config)
    model_path = run_dir / "model.zip"
    done = 0
    if resume and model_path.exists():
        model = algo_class(config["algo"]).load(str(model_path), env=env, device="cpu")
        done = int(model.num_timesteps)
        truncate_metrics(run_dir / "train_metrics.csv", 10**12)
        print(f"resuming {run_dir} at step {done}", file=sys.stderr)
    else:
        model = make_sb3_model(config["algo"], env, config["hyperparams"], seed=config["seed"],
                               tensorboard_log=str(run_dir / "tb") if config["tensorboard"] else None)
    monitor = RunMonitor(run_dir, tensorboard=config["tensorboard"], prefix="train")
    remaining = max(config["total_steps"] - done, 0)
    with StopRequest() as stop:
        callback = monitor_callback(monitor, lambda: (save_model_atomic(model, model_path), monitor.flush()),
                                    config["checkpoint_every"], stop=lambda: stop.requested)
        if remaining:
            model.learn(remaining, callback=callback, reset_num_timesteps=not resume, progress_bar=progress)
    if stop.requested:
        save_model_atomic(model, model_path)
        monitor.close("train_summary.json", extra={"interrupted_at_step": int(model.num_timesteps)})
        print(f"interrupted: model saved in {run_dir}; continue with --resume {run_dir}", file=sys.stderr)
        raise SystemExit(130)
    save_model_atomic(model, model_path)
    monitor.close("train_summary.json")

    # Deployment: the trained policy drives a fresh learning process, nothing learned any more.
    eval_config = {**config, "env_kwargs": {**config["env_kwargs"], "max_rounds": config["eval_rounds"],
                                            "horizon": config["env_kwargs"].get("horizon", 5)}}
    eval_env = make_env(eval_config)
    eval_env.reset(seed=config["seed"] + 10_000)
    agent = SB3Agent(config["algo"], model)
    monitor = RunMonitor(run_dir, tensorboard=config["tensorboard"], prefix="round")
    bar = _progress(config["eval_rounds"], 0, progress, f"{config['algo']} deploy")
    for _ in range(config["eval_rounds"]):
        _, reward, terminated, truncated, info = agent.play(eval_env.unwrapped)
        monitor.log_round(reward, info)
        if (terminated or truncated) and eval_env.unwrapped.simulator.round_index < config["eval_rounds"]:
            eval_env.reset()
        _advance_bar(bar, reward, info)
    if bar is not None:
        bar.close()
    sim = eval_env.unwrapped.simulator
    sim.evaluate()
    monitor.last_info = {**monitor.last_info, "test_accuracy": sim.test_accuracy,
                         "test_accuracy_round": sim.test_accuracy_round}
    monitor.save_heatmap(f"{config['algo']} (deployed) on {config['env']}: credit per worker and round")
    return monitor.close()


def _progress(total: int, start: int, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=label, unit="round", dynamic_ncols=True)


def _advance_bar(bar: Any, reward: float, info: dict[str, Any]) -> None:
    if bar is None:
        return
    bar.update(1)
    if int(info["round"]) % 20 == 0:
        acc = info.get("test_accuracy")
        bar.set_postfix(reward=f"{reward:+.4f}", acc="-" if acc is None else f"{acc:.3f}",
                        byz_credit=f"{info.get('byzantine_credit', 0.0):.3f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from agents.factory import is_sb3

    torch.set_num_threads(args.threads)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yml").is_file():
            raise SystemExit(f"error: --resume {run_dir}: no config.yml there (not a run folder)")
        config = yaml.safe_load((run_dir / "config.yml").read_text())
    else:
        if args.algo is None:
            raise SystemExit("error: --algo is required (or --resume RUN_DIR)")
        try:
            config = resolve_config(args)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        name = args.run_name or f"{args.env}_{args.algo}_{time.strftime('%Y%m%d-%H%M%S')}_s{args.seed}"
        run_dir = Path(args.log_dir) / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise SystemExit(f"error: run folder {run_dir} exists; pick another --run-name or --resume it")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml_atomic(run_dir / "config.yml", config)
    runner = run_sb3 if is_sb3(config["algo"]) else run_online
    try:
        summary = runner(config, run_dir, bool(args.resume), args.progress)
    except ValueError as err:  # bad env kwargs / hyperparameters: one line, non-zero exit
        raise SystemExit(f"error: {err}") from None
    print(json.dumps({"run_dir": str(run_dir), **summary}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
