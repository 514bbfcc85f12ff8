"""A small Flower federation on MNIST with Byzantine clients, defended by gaa-env's RobustStrategy.

    pip install 'gaa-env[flower]'
    python examples/flower_mnist.py --clients 5 --byzantine 1 --tampering rf --rule krum --rounds 5
    python examples/flower_mnist.py --rule gaa --gaa-policy runs/<run>/agent.pt   # a trained GAA policy

Each client holds a slice of MNIST (``load_mnist``), runs ``--local-steps`` SGD steps from the
global model and returns its parameters; Byzantine clients replace their pseudo-gradient with the
package's tampering (``make_tampering``, e.g. ``rf``: N(0.5, (2e-6)²) per coordinate) before
sending. The server (:class:`gaa_env.integrations.flower.RobustStrategy`) aggregates with the chosen
rule and a quasi-validation set of ``--quasi-size`` training samples held by the server, and prints
per round the test accuracy and each client's credit. Runs on Flower's simulation engine (Ray),
loopback only, one torch thread per process. ``--out`` writes the per-round results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage telemetry from this example (read at import)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from gaa_env.attacks import make_tampering  # noqa: E402
from gaa_env.attacks.tampering import TamperContext  # noqa: E402
from gaa_env.data import load_mnist  # noqa: E402
from gaa_env.integrations.flower import (  # noqa: E402
    RobustStrategy,
    accuracy_evaluate_fn,
    arrays_to_theta,
    theta_to_arrays,
)
from gaa_env.models import FunctionalModel, mnist_mlp  # noqa: E402

try:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
except ImportError as err:  # pragma: no cover - gaa_env.integrations.flower already raised
    raise ImportError("this example needs Flower: pip install 'gaa-env[flower]'") from err


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5, help="number of Flower clients (SuperNodes)")
    p.add_argument("--byzantine", type=int, default=1, help="how many clients are Byzantine")
    p.add_argument("--tampering", default="rf", help="a tampering of gaa_env.attacks (rf, gaussian, sign_flip, ...)")
    p.add_argument("--rule", default="krum", help="an aggregation rule of gaa_env.aggregators, or 'gaa'")
    p.add_argument("--gaa-policy", default=None, help="agent.pt of a trained GAA agent (with --rule gaa)")
    p.add_argument("--f", type=int, default=None, help="f told to the rule (default: --byzantine)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples-per-client", type=int, default=600)
    p.add_argument("--local-steps", type=int, default=1, help="local SGD steps per round (1: the paper's setting)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1, help="client and server learning rate λ")
    p.add_argument("--quasi-size", type=int, default=8, help="|B|, the server's quasi-validation set")
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", type=int, default=2, help="CPUs given to the simulation engine (Ray)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds the server waits for replies per round")
    p.add_argument("--out", type=Path, default=None, help="write per-round results here (JSON)")
    args = p.parse_args(argv)
    if not 1 <= args.clients:
        p.error("--clients must be >= 1")
    if not 0 <= args.byzantine < args.clients:
        p.error("--byzantine must be in [0, clients)")
    if args.rule == "gaa" and not args.gaa_policy:
        p.error("--rule gaa needs --gaa-policy")
    return args


def byzantine_clients(args: argparse.Namespace) -> list[int]:
    order = torch.randperm(args.clients, generator=torch.Generator().manual_seed(args.seed))
    return sorted(order[: args.byzantine].tolist())


_DATA: dict[str, Any] = {}


def mnist() -> Any:
    """MNIST, loaded once per process (each Ray actor loads its own copy)."""
    if "mnist" not in _DATA:
        _DATA["mnist"] = load_mnist()
    return _DATA["mnist"]


def split(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint training indices: ``[clients, samples_per_client]`` and the server's quasi set ``[|B|]``."""
    n_train = len(mnist().y_train)
    need = args.clients * args.samples_per_client + args.quasi_size
    if need > n_train:
        raise ValueError(f"clients * samples_per_client + quasi_size = {need} > {n_train} training samples")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed + 1))[:need]
    return perm[args.quasi_size:].reshape(args.clients, args.samples_per_client), perm[: args.quasi_size]


def make_client_app(args: argparse.Namespace) -> ClientApp:
    app = ClientApp()
    byzantine = set(byzantine_clients(args))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        data, (client_idx, _) = mnist(), split(args)
        x, y = data.x_train[client_idx[pid]], data.y_train[client_idx[pid]]
        model = FunctionalModel(mnist_mlp())
        theta = arrays_to_theta(msg.content["arrays"], model)
        server_round = int(msg.content["config"]["server-round"])
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + server_round * 1009 + pid)
        is_byz = pid in byzantine
        tampering = make_tampering(args.tampering) if is_byz else None
        active = torch.tensor([True])
        local = theta.clone()
        bx = by = None
        for _ in range(args.local_steps):
            idx = torch.randint(len(y), (args.batch_size,), generator=gen)
            bx, by = x[idx].unsqueeze(0), y[idx].unsqueeze(0)
            if tampering is not None:  # data poisoning (label_flip) acts on the batch
                ctx = TamperContext(theta=local, generator=gen, lr=args.lr, round_index=server_round, model=model,
                                    batch_x=bx, batch_y=by, n_classes=10)
                bx, by = tampering.poison_batch(bx, by, active, ctx)
            local = local - args.lr * model.worker_gradients(local, bx, by)[0]
        if tampering is not None:  # forge the pseudo-gradient the server will see
            pseudo = ((theta - local) / args.lr).unsqueeze(0)
            ctx = TamperContext(theta=theta, generator=gen, lr=args.lr, round_index=server_round, model=model,
                                batch_x=bx, batch_y=by, n_classes=10)
            local = theta - args.lr * tampering(pseudo, active, ctx)[0]
        metrics = MetricRecord({"num-examples": len(y), "partition-id": pid, "byzantine": int(is_byz)})
        return Message(content=RecordDict({"arrays": theta_to_arrays(local, model), "metrics": metrics}),
                       reply_to=msg)

    return app


def make_server_app(args: argparse.Namespace, results: list[dict[str, Any]]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        model = FunctionalModel(mnist_mlp())
        data, (_, quasi_idx) = mnist(), split(args)
        f = args.byzantine if args.f is None else args.f
        rule_params = {"strict": False} if args.rule in ("krum", "multi_krum") else {}
        strategy = RobustStrategy(
            model, data.x_train[quasi_idx], data.y_train[quasi_idx],
            rule=args.rule if args.rule != "gaa" else "mean", rule_params=rule_params if args.rule != "gaa" else None,
            gaa_policy=args.gaa_policy if args.rule == "gaa" else None, n_byzantine=f, lr=args.lr,
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=args.clients,
            min_available_nodes=args.clients)
        test = accuracy_evaluate_fn(model, data.x_test[: args.test_size], data.y_test[: args.test_size])
        t0 = time.perf_counter()

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            metrics = test(server_round, arrays)
            row: dict[str, Any] = {"round": server_round, "test_accuracy": metrics["accuracy"],
                                   "test_loss": metrics["loss"], "wall_s": time.perf_counter() - t0}
            credit_text = ""
            if server_round > 0 and strategy.history:
                h = strategy.history[-1]
                clients = h.get("client_metrics", {})
                pids = [int(clients.get(nid, {}).get("partition-id", -1)) for nid in h["node_ids"]]
                byz = [bool(clients.get(nid, {}).get("byzantine", 0)) for nid in h["node_ids"]]
                row.update(partition_ids=pids, byzantine=byz, credit=h["credit"], skipped=h["skipped"],
                           quasi_loss=h["quasi_loss_after"])
                if h["credit"] is not None:
                    credit_text = " credit " + " ".join(
                        f"c{p}{'*' if b else ''}={c:.2f}" for p, b, c in sorted(zip(pids, byz, h["credit"])))
                    row["byzantine_credit"] = sum(c for b, c in zip(byz, h["credit"]) if b)
            print(f"[flower_mnist] round {server_round:3d}  test acc {metrics['accuracy']:.4f}{credit_text}",
                  flush=True)
            results.append(row)
            return metrics

        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.module.state_dict()), num_rounds=args.rounds,
                       timeout=args.timeout, evaluate_fn=evaluate)

    return app


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the federation on Flower's simulation engine; returns one row per round (round 0 = initial model)."""
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    byz = byzantine_clients(args)
    print(f"[flower_mnist] {args.clients} clients, Byzantine {byz} ({args.tampering}), rule {args.rule}, "
          f"{args.rounds} rounds (* = Byzantine)", flush=True)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.cpus, "num_gpus": 0, "include_dashboard": False,
                      "_node_ip_address": "127.0.0.1", "logging_level": "ERROR"},
    }
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the Ray workers
    run_simulation(server_app=make_server_app(args, results), client_app=make_client_app(args),
                   num_supernodes=args.clients, backend_config=backend_config)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "byzantine_clients": byz, "rounds": results}, indent=2))
    return results


if __name__ == "__main__":
    # Run through the importable module ``flower_mnist`` rather than ``__main__``: Ray then imports this
    # file once per worker process (Flower puts the driver's sys.path on the workers' PYTHONPATH) and
    # keeps its MNIST cache across rounds, instead of unpickling fresh copies of the functions.
    import flower_mnist

    flower_mnist.run(flower_mnist.parse_args())
