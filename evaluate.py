#!/usr/bin/env python
"""Evaluate server agents over a grid; one grid cell = one ``train_agent.py`` run folder.

The grid is the product algos × attack patterns × tamperings × betas × env ids × seeds (× every
``--env-kwargs`` value given as a list), from the flags below or from ``--config grid.yml``.
Each cell is run by ``train_agent.run_online`` (gaa, every aggregation rule, oracle) or
``train_agent.run_sb3`` (ppo, sac, ...) into ``RUNS_DIR/<cell>``; a cell whose ``summary.json``
exists is skipped, a half-done one resumes from its checkpoint, so rerunning the same command
continues an interrupted grid. Then ``OUT`` receives:

* ``results.csv``: one tidy row per run (grid cells, ``n/a`` cells and ``--from-runs`` folders):
  every config field, final and best test accuracy, final f_B, credit mass on Byzantine workers
  (last 100 rounds), mean GAA+ detection precision/recall, mean wall time per round;
* ``summary.md``: mean ± std over seeds per (algo, attack, tampering, beta), accuracy pivots,
  the time-per-round table (Table 3 style) and links to the figures;
* figures: ``accuracy_*.png`` (final accuracy bars per rule grouped by beta, Fig. 4 style),
  ``curves_*.png`` (test accuracy vs round for ``--curve-attacks``, Fig. 5 style),
  ``detection_*.png`` (GAA+ precision from the gaa runs vs GeoMed+ computed on the received
  gradients of a GeoMed-driven process with the same env kwargs and seed), and ``heatmaps/``
  (copies of the runs' credit heat-maps).

Examples::

    python evaluate.py --algos mean krum median gaa oracle --betas 0.2 0.5 0.7 --seeds 0 1 2 \\
        --env-kwargs grad_clip:quasi_norm --rounds 500 --out results/fig4
    python evaluate.py --config experiments/results_grid.yml          # regenerates docs/results.md
    python evaluate.py --algos gaa --attacks pretense randomized --rounds 1000 --out results/fig5 \\
        --from-runs runs/                                            # also tabulate earlier runs

A ``--config`` YAML may set any flag below (``algos: [...]``, ``betas: ...``, ``env_kwargs: {...}``,
``rounds: 500``, ``out: ...``); any grid field may be a list. A ``grids:`` list of blocks makes the
grid a union of products: each block may set the grid fields, ``env_kwargs``, ``hyperparams``
(``{algo: {key: value}}``) and run lengths, over the top-level values. Command-line flags replace
the file's top-level values; values inside ``grids:`` blocks win over both.

Rules whose precondition fails for a cell (e.g. Bulyan needs n >= 4f + 3) are reported ``n/a``;
Krum-family rules that have a ``strict=False`` variant run relaxed there (the paper ran Krum at
beta = 0.5), marked ``relaxed`` (``*`` in the tables). Bad input exits non-zero with one line.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import train_agent

AXES = ("algo", "attack", "tampering", "beta", "env", "seed")
ENV_AXES = ("beta", "attack", "tampering", "seed")
DEFAULT_AXES: dict[str, list[Any]] = {"algo": ["gaa", "mean"], "attack": ["static"], "tampering": ["rf"],
                                      "beta": [0.2, 0.5, 0.7], "env": ["GAA-MNIST-v0"], "seed": [0]}
ALIASES = {"algos": "algo", "attacks": "attack", "tamperings": "tampering", "betas": "beta", "envs": "env",
           "seeds": "seed"}
REPORTING_KWARGS = ("eval_interval", "test_size", "data_dir")  # change what is measured, not the learning: no label
LENGTHS = ("rounds", "total_steps", "eval_rounds")
BLOCK_KEYS = frozenset({*AXES, "env_kwargs", "hyperparams", *LENGTHS})
OPTION_DEFAULTS: dict[str, Any] = {
    "out": "runs/evaluate", "runs_dir": None, "processes": 1, "checkpoint_every": 500, "tensorboard": False,
    "relax_preconditions": True, "geomed_plus": True, "geomed_plus_seeds": None, "geomed_plus_driver": "geomed",
    "curve_attacks": ["pretense", "randomized"], "heatmaps": None, "heatmap_seeds": None, "from_runs": [],
    "report": None, "report_notes": None, "report_title": "Evaluation results", "dry_run": False,
    "eval_rounds": 1000,
}
TOP_KEYS = frozenset({*BLOCK_KEYS, "grids", *OPTION_DEFAULTS})
RESULT_COLUMNS = [
    "name", "source", "status", "reason", "label", "algo", "env", "attack", "tampering", "beta", "seed",
    "n_workers", "n_byzantine", "rounds", "total_steps", "eval_rounds", "relaxed",
    "final_test_accuracy", "best_test_accuracy", "final_quasi_loss", "byzantine_credit_last100",
    "detection_precision_mean", "detection_recall_mean", "wall_time_per_round_mean", "rounds_done", "cpu_seconds",
    "run_dir",
]
METRICS = ("final_test_accuracy", "best_test_accuracy", "final_quasi_loss", "byzantine_credit_last100",
           "detection_precision_mean", "detection_recall_mean", "wall_time_per_round_mean")


class SpecError(Exception):
    """Bad grid input: reported as one line, non-zero exit."""


# ----------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from agents.factory import all_algos

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("grid (each flag takes a list; the grid is their product)")
    g.add_argument("--algos", nargs="+", metavar="ALGO",
                   help=f"agents (default: gaa mean); one of: {' '.join(all_algos())}")
    g.add_argument("--attacks", nargs="+", metavar="PATTERN",
                   help="attack patterns: static pretense randomized periodic none (default: static)")
    g.add_argument("--tamperings", nargs="+", metavar="TAMPERING",
                   help="tamperings, e.g. rf alie ipm sign_flip gaussian (default: rf)")
    g.add_argument("--betas", nargs="+", type=float, metavar="BETA",
                   help="Byzantine ratios in [0, 1) (default: 0.2 0.5 0.7)")
    g.add_argument("--envs", nargs="+", metavar="ENV_ID", help="environment ids (default: GAA-MNIST-v0)")
    g.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds of env and agent (default: 0)")
    g.add_argument("--env-kwargs", nargs="+", metavar="KEY:VALUE",
                   help="extra env kwargs for every cell, values parsed as YAML; a list value is a grid axis, "
                        "e.g. grad_clip:quasi_norm test_size:2000 'quasi_size:[1, 8]'")
    g.add_argument("--hyperparams", nargs="+", metavar="ALGO:KEY:VALUE",
                   help="hyperparameters of one algo, e.g. gaa:policy:equivariant krum:squared:false")
    g.add_argument("--config", metavar="GRID_YML",
                   help="YAML grid: any option of this command, a grid field may be a list; a 'grids:' list of "
                        "blocks makes a union of products (see the top of this help)")
    r = p.add_argument_group("run lengths and execution")
    r.add_argument("--rounds", type=int, help="online agents (gaa, rules, oracle): rounds of the learning process "
                                              "(default: the algo's YAML, else 1000)")
    r.add_argument("--total-steps", type=int, help="SB3 agents: training env steps (default: the algo's YAML)")
    r.add_argument("--eval-rounds", type=int, help="SB3 agents: rounds of the deployment run (default: 1000)")
    r.add_argument("--processes", type=int, help="worker processes for the cells (default: 1 = in this process; "
                                                 "each worker uses one torch thread)")
    r.add_argument("--checkpoint-every", type=int, help="rounds between checkpoints of a cell (default: 500; 0: "
                                                        "only at the end)")
    r.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="write TensorBoard events in the run folders (default: off)")
    r.add_argument("--relax-preconditions", action=argparse.BooleanOptionalAction, default=None,
                   help="run rules with a strict=False variant (krum, multi_krum, brute_force) relaxed where their "
                        "precondition fails, as the paper did at beta=0.5 (default: on); other rules are n/a there")
    r.add_argument("--dry-run", action="store_true", default=None, help="list the cells and exit")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder: results.csv, summary.md, figures (default: runs/evaluate)")
    o.add_argument("--runs-dir", help="parent of the cells' run folders (default: OUT/runs)")
    o.add_argument("--from-runs", nargs="+", metavar="DIR",
                   help="also tabulate train_agent.py run folders (a run folder or a folder of run folders); "
                        "with no grid flag/field at all, only these are tabulated")
    o.add_argument("--geomed-plus", action=argparse.BooleanOptionalAction, default=None,
                   help="for every gaa cell, compute GeoMed+ detection on a process with the same env kwargs and "
                        "seed (default: on)")
    o.add_argument("--geomed-plus-seeds", nargs="+", type=int, metavar="SEED",
                   help="restrict the GeoMed+ processes to these seeds (default: all)")
    o.add_argument("--geomed-plus-driver", metavar="RULE",
                   help="rule that drives the GeoMed+ process (default: geomed, GeoMed+'s own rule)")
    o.add_argument("--curve-attacks", nargs="+", metavar="PATTERN",
                   help="attack patterns that get learning-curve figures (default: pretense randomized)")
    o.add_argument("--heatmaps", nargs="+", metavar="ALGO",
                   help="copy the credit heat-maps of these algos to OUT/heatmaps (default: all)")
    o.add_argument("--heatmap-seeds", nargs="+", type=int, metavar="SEED",
                   help="... of these seeds (default: the smallest seed of the grid)")
    o.add_argument("--report", metavar="MD", help="also write a self-contained markdown report (e.g. docs/results.md)")
    o.add_argument("--report-notes", metavar="MD", help="markdown file inserted into the report (the discussion)")
    o.add_argument("--report-title", help="title of the report")
    return p


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def cli_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The top-level spec given on the command line (only the flags that were set)."""
    spec: dict[str, Any] = {}
    for flag, axis in (("algos", "algo"), ("attacks", "attack"), ("tamperings", "tampering"), ("betas", "beta"),
                       ("envs", "env"), ("seeds", "seed")):
        if getattr(args, flag) is not None:
            spec[axis] = getattr(args, flag)
    if args.env_kwargs:
        spec["env_kwargs"] = train_agent.parse_kv(args.env_kwargs, "--env-kwargs")
    if args.hyperparams:
        hyper: dict[str, dict[str, Any]] = defaultdict(dict)
        for item in args.hyperparams:
            algo, sep, rest = item.partition(":")
            if not sep or ":" not in rest:
                raise SpecError(f"--hyperparams expects ALGO:KEY:VALUE, got {item!r}")
            hyper[algo].update(train_agent.parse_kv([rest], "--hyperparams"))
        spec["hyperparams"] = dict(hyper)
    for key in ("rounds", "total_steps", "eval_rounds", "processes", "checkpoint_every", "tensorboard",
                "relax_preconditions", "dry_run", "out", "runs_dir", "from_runs", "geomed_plus",
                "geomed_plus_seeds", "geomed_plus_driver", "curve_attacks", "heatmaps", "heatmap_seeds", "report",
                "report_notes", "report_title"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    return spec


def load_spec(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` file merged with the command line (CLI wins at top level)."""
    spec: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SpecError(f"--config {path}: no such file")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise SpecError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(spec, dict):
            raise SpecError(f"--config {path}: expected a mapping of options")
        spec = {ALIASES.get(k, k): v for k, v in spec.items()}
    cli = cli_spec(args)
    for key, value in cli.items():
        if key == "env_kwargs":
            spec["env_kwargs"] = {**(spec.get("env_kwargs") or {}), **value}
        elif key == "hyperparams":
            merged = {a: dict(h) for a, h in (spec.get("hyperparams") or {}).items()}
            for algo, params in value.items():
                merged.setdefault(algo, {}).update(params)
            spec["hyperparams"] = merged
        else:
            spec[key] = value
    return spec


def options(spec: dict[str, Any]) -> dict[str, Any]:
    opts = {key: spec.get(key, default) for key, default in OPTION_DEFAULTS.items()}
    opts["runs_dir"] = opts["runs_dir"] or str(Path(opts["out"]) / "runs")
    for key in ("from_runs", "curve_attacks"):
        opts[key] = as_list(opts[key])
    for key in ("geomed_plus_seeds", "heatmaps", "heatmap_seeds"):
        opts[key] = None if opts[key] is None else as_list(opts[key])
    from gaa_env.aggregators import AGGREGATORS

    if opts["geomed_plus_driver"] not in AGGREGATORS:
        raise SpecError(f"geomed_plus_driver {opts['geomed_plus_driver']!r} is not a rule; allowed: "
                        f"{', '.join(sorted(AGGREGATORS))}")
    if opts["report_notes"] and not Path(opts["report_notes"]).is_file():
        raise SpecError(f"report_notes {opts['report_notes']}: no such file")
    if not isinstance(opts["processes"], int) or opts["processes"] < 1:
        raise SpecError(f"processes must be an integer >= 1, got {opts['processes']!r}")
    return opts


# ----------------------------------------------------------------------------------- grid expansion
def normalize_level(raw: dict[str, Any], where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping, got {raw!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = ALIASES.get(key, key)
        if key not in allowed:
            raise SpecError(f"{where}: unknown field {key!r}; allowed: {', '.join(sorted(allowed))}")
        out[key] = value
    env_kwargs = out.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise SpecError(f"{where}: env_kwargs must be a mapping, got {env_kwargs!r}")
    env_kwargs = dict(env_kwargs)
    for axis in ENV_AXES:  # beta:0.5 in env_kwargs is the beta axis
        if axis in env_kwargs:
            if axis in out:
                raise SpecError(f"{where}: {axis} given both as a grid field and in env_kwargs")
            out[axis] = env_kwargs.pop(axis)
    out["env_kwargs"] = env_kwargs
    hyper = out.get("hyperparams") or {}
    if not isinstance(hyper, dict) or not all(isinstance(v, dict) for v in hyper.values()):
        raise SpecError(f"{where}: hyperparams must map an algo to a mapping, e.g. {{gaa: {{policy: paper}}}}")
    out["hyperparams"] = hyper
    for axis in AXES:
        if axis in out:
            out[axis] = as_list(out[axis])
            if not out[axis]:
                raise SpecError(f"{where}: {axis} is an empty list")
    for key in LENGTHS:
        value = out.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{where}: {key} must be an integer >= 1, got {value!r}")
    return out


def check_axis_value(axis: str, value: Any) -> None:
    if axis == "beta" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise SpecError(f"beta must be a number in [0, 1), got {value!r}")
    if axis == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"seed must be an integer, got {value!r}")
    if axis in ("algo", "attack", "tampering", "env") and not isinstance(value, str):
        raise SpecError(f"{axis} must be a name, got {value!r}")


def expand(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's cells (deduplicated, in order) as plain specs."""
    top = normalize_level({k: v for k, v in spec.items() if k != "grids"}, "grid", TOP_KEYS)
    blocks = spec.get("grids") or [{}]
    if not isinstance(blocks, list):
        raise SpecError("grids must be a list of blocks")
    cells, seen = [], set()
    for index, raw in enumerate(blocks):
        block = normalize_level(raw, f"grids[{index}]", BLOCK_KEYS)
        axes = {a: block.get(a, top.get(a, DEFAULT_AXES[a])) for a in AXES}
        env_kwargs = {**top["env_kwargs"], **block["env_kwargs"]}
        hyper = {a: dict(h) for a, h in top["hyperparams"].items()}
        for algo, params in block["hyperparams"].items():
            hyper.setdefault(algo, {}).update(params)
        lengths = {k: block.get(k, top.get(k)) for k in LENGTHS}
        kw_keys = sorted(env_kwargs)
        for combo in itertools.product(*(axes[a] for a in AXES), *(as_list(env_kwargs[k]) for k in kw_keys)):
            cell = dict(zip(AXES, combo[:len(AXES)]))
            for axis, value in cell.items():
                check_axis_value(axis, value)
            cell["beta"] = float(cell["beta"])
            cell["env_kwargs"] = dict(zip(kw_keys, combo[len(AXES):]))
            cell["hyperparams"] = dict(hyper.get(cell["algo"], {}))
            cell.update(lengths)
            key = json.dumps(cell, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                cells.append(cell)
    return cells


def finished(run_dir: str | Path) -> bool:
    """A run folder whose run completed (train_agent writes summary.json on Ctrl-C too, marked interrupted)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return False
    try:
        return "interrupted_at_round" not in json.loads(path.read_text())
    except json.JSONDecodeError:
        return False


def spec_hyperparam_algos(spec: dict[str, Any]) -> list[str]:
    blocks = [spec, *(b for b in spec.get("grids") or [] if isinstance(b, dict))]
    return [algo for block in blocks for algo in (block.get("hyperparams") or {})]


# ----------------------------------------------------------------------------------- cells
def config_hash(config: dict[str, Any]) -> str:
    core = {k: v for k, v in config.items() if k not in ("checkpoint_every", "tensorboard")}
    return hashlib.sha1(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:8]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")


def env_short(env: str) -> str:
    from gaa_env import ENV_IDS

    return ENV_IDS.get(env, env)


def resolve(cell: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """train_agent's own config for a cell (its YAML defaults + the cell's kwargs)."""
    env_kwargs = {**cell["env_kwargs"], "beta": cell["beta"], "attack": cell["attack"],
                  "tampering": cell["tampering"]}
    ns = argparse.Namespace(
        algo=cell["algo"], env=cell["env"], seed=cell["seed"], hyperparams_file=None,
        env_kwargs=[f"{k}:{json.dumps(v)}" for k, v in env_kwargs.items()],
        hyperparams=[f"{k}:{json.dumps(v)}" for k, v in cell["hyperparams"].items()],
        rounds=cell.get("rounds"), total_steps=cell.get("total_steps"),
        eval_rounds=cell.get("eval_rounds") or opts["eval_rounds"],
        checkpoint_every=opts["checkpoint_every"], tensorboard=bool(opts["tensorboard"]))
    return train_agent.resolve_config(ns)


def probe_rule(aggregator: Any, n: int, f: int) -> str | None:
    """Run a rule once on random rows with ``f`` Byzantine assumed: its precondition error, or None."""
    import torch

    from gaa_env.aggregators import AggregationContext

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(n, 8, generator=g)
    ctx = AggregationContext(n_byzantine=f, quasi_grad=torch.randn(8, generator=g), previous_update=None,
                             quasi_loss=1.0, quasi_loss_after_step=lambda u: torch.ones(u.shape[0]), lr=0.05)
    aggregator.reset()
    try:
        aggregator(rows, ctx)
    except ValueError as err:
        return str(err)
    return None


def build_cell(cell: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """Validate a cell (SpecError on bad input) and decide todo / done / n/a."""
    from agents.factory import all_algos, is_sb3
    from gaa_env import ENV_IDS
    from gaa_env.aggregators import AGGREGATORS, make_aggregator
    from gaa_env.envs.config import GAAConfig

    algo, env = cell["algo"], cell["env"]
    if algo not in all_algos():
        raise SpecError(f"unknown algo {algo!r}; allowed: {', '.join(all_algos())}")
    if env not in ENV_IDS:
        raise SpecError(f"unknown env id {env!r}; allowed: {', '.join(ENV_IDS)}")
    try:
        config = resolve(cell, opts)
        env_cfg = GAAConfig.from_kwargs(benchmark=ENV_IDS[env], **config["env_kwargs"])
    except ValueError as err:
        raise SpecError(f"{algo} on {env}: {err}") from None
    n, f = env_cfg.n_workers, int(env_cfg.beta * env_cfg.n_workers)
    status, reason, relaxed = "todo", "", False
    if algo in AGGREGATORS:
        try:
            aggregator = make_aggregator(algo, **config["hyperparams"])
        except ValueError as err:
            raise SpecError(str(err)) from None
        error = probe_rule(aggregator, n, f)
        accepts_strict = "strict" in inspect.signature(AGGREGATORS[algo].__init__).parameters
        if error and opts["relax_preconditions"] and accepts_strict and "strict" not in config["hyperparams"]:
            if probe_rule(make_aggregator(algo, **config["hyperparams"], strict=False), n, f) is None:
                config["hyperparams"]["strict"] = False
                error, relaxed = None, True
        if error:
            status, reason = "n/a", error
    elif algo == "gaa":
        from agents.gaa import GAAConfigAgent

        try:
            GAAConfigAgent(**config["hyperparams"])
        except (TypeError, ValueError) as err:
            raise SpecError(f"gaa hyperparams: {err}") from None
    elif is_sb3(algo) and not isinstance(config.get("total_steps"), int):
        raise SpecError(f"{algo}: total_steps must be an integer")
    # The name depends on the cell alone (not on the rest of the grid), so a grid can grow and still resume.
    name = slug(f"{env_short(env)}_{algo}_{cell['attack']}-{cell['tampering']}_b{cell['beta']:g}_s{cell['seed']}"
                f"_{config_hash(config)}")
    run_dir = Path(opts["runs_dir"]) / name
    if status == "todo" and finished(run_dir):
        status = "done"
    return {"name": name, "run_dir": str(run_dir), "config": config, "status": status, "reason": reason,
            "relaxed": relaxed, "source": "grid", "n_workers": n, "n_byzantine": f,
            "algo": algo, "env": env, "attack": cell["attack"], "tampering": cell["tampering"],
            "beta": cell["beta"], "seed": cell["seed"]}


def from_runs(dirs: list[str]) -> list[dict[str, Any]]:
    """Rows for existing train_agent.py run folders (a folder of run folders is scanned one level)."""
    from gaa_env import ENV_IDS
    from gaa_env.envs.config import GAAConfig

    found: list[Path] = []
    for entry in dirs:
        path = Path(entry)
        if (path / "config.yml").is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if (p / "config.yml").is_file()))
        else:
            raise SpecError(f"--from-runs {path}: not a run folder nor a folder of run folders")
    rows = []
    defaults = GAAConfig()
    for run_dir in found:
        config = yaml.safe_load((run_dir / "config.yml").read_text())
        if not finished(run_dir):
            print(f"warning: --from-runs {run_dir}: unfinished run, left out", file=sys.stderr)
            continue
        kw = config.get("env_kwargs") or {}
        try:
            env_cfg = GAAConfig.from_kwargs(benchmark=ENV_IDS.get(config["env"], "mnist"), **kw)
            n, f = env_cfg.n_workers, int(env_cfg.beta * env_cfg.n_workers)
        except (ValueError, TypeError):
            n = f = None
        hyper = config.get("hyperparams") or {}
        rows.append({"name": run_dir.name, "run_dir": str(run_dir), "config": config, "status": "done", "reason": "",
                     "relaxed": hyper.get("strict") is False, "source": "from-runs", "n_workers": n,
                     "n_byzantine": f, "algo": config["algo"], "env": config["env"],
                     "attack": kw.get("attack", defaults.attack), "tampering": kw.get("tampering", defaults.tampering),
                     "beta": float(kw.get("beta", defaults.beta)), "seed": config.get("seed", 0)})
    return rows


def assign_labels(rows: list[dict[str, Any]]) -> None:
    """label = algo + the env kwargs / hyperparameters that set it apart (not defaults, not common to all)."""
    from dataclasses import MISSING, fields

    from agents.sb3 import load_hyperparams
    from gaa_env.envs.config import GAAConfig

    base_env = {f.name: (f.default if f.default is not MISSING else f.default_factory())  # type: ignore[misc]
                for f in fields(GAAConfig)}
    extras_of = []
    for row in rows:
        config = row["config"]
        yaml_hyper = load_hyperparams(row["algo"], row["env"])
        env_defaults = {**base_env, **(yaml_hyper.get("env_kwargs") or {})}
        extras = {}
        for key, value in (config.get("env_kwargs") or {}).items():
            if key not in ENV_AXES and key not in REPORTING_KWARGS and env_defaults.get(key, object()) != value:
                extras[key] = value
        for key, value in (config.get("hyperparams") or {}).items():
            if key == "seed" or (key == "strict" and row["relaxed"]):
                continue
            if yaml_hyper.get(key, object()) != value:
                extras[key] = value
        extras_of.append({k: json.dumps(v, sort_keys=True) for k, v in extras.items()})
    common = set.intersection(*(set(e.items()) for e in extras_of)) if extras_of else set()
    for row, extras in zip(rows, extras_of):
        shown = sorted(kv for kv in extras.items() if kv not in common)
        row["label"] = row["algo"] + ("" if not shown else " " + " ".join(f"{k}={v.strip(chr(34))}" for k, v in shown))


def geomed_plus_tasks(rows: list[dict[str, Any]], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """One GeoMed+ process per gaa cell's (env, env kwargs, seed, rounds), driven by a rule."""
    if not opts["geomed_plus"]:
        return []
    tasks, seen = [], set()
    for row in rows:
        if row["source"] != "grid" or row["algo"] != "gaa" or row["status"] == "n/a" or row["attack"] == "none":
            continue
        if opts["geomed_plus_seeds"] is not None and row["seed"] not in opts["geomed_plus_seeds"]:
            continue
        config = row["config"]
        spec = {"env": config["env"], "env_kwargs": config["env_kwargs"], "seed": config["seed"],
                "rounds": config["rounds"], "driver": opts["geomed_plus_driver"]}
        key = config_hash(spec)
        path = Path(opts["runs_dir"]) / "geomed_plus" / f"{row['name']}_{key}.csv"
        row["geomed_plus_csv"] = str(path)
        if key in seen:
            continue
        seen.add(key)
        tasks.append({"kind": "geomed_plus", "name": f"GeoMed+ {row['name']}", "path": str(path), **spec,
                      "status": "done" if path.is_file() else "todo"})
    return tasks


# ----------------------------------------------------------------------------------- running
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a run installs its own Ctrl-C handler (checkpoint, stop)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (or one GeoMed+ process); returns {'name', 'error', 'seconds'}."""
    import torch

    torch.set_num_threads(1)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        if task["kind"] == "geomed_plus":
            _run_geomed_plus(task)
        else:
            _run_cell(task)
            if finished(task["run_dir"]):  # CPU time of this (last) attempt, for the grid's cost statement
                from agents.monitor import write_atomic

                timing = {"cpu_seconds": time.process_time() - cpu_start, "wall_seconds": time.perf_counter() - start}
                write_atomic(Path(task["run_dir"]) / "evaluate_timing.json", json.dumps(timing))
        error = None
    except Exception as err:  # noqa: BLE001  (a failing cell must not stop the grid)
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return {"name": task["name"], "error": error, "seconds": time.perf_counter() - start}


def _run_cell(task: dict[str, Any]) -> None:
    from agents.factory import is_sb3

    run_dir, config = Path(task["run_dir"]), task["config"]
    if finished(run_dir):
        return
    sb3 = is_sb3(config["algo"])
    resume = (run_dir / ("model.zip" if sb3 else "checkpoint.pt")).is_file() and (run_dir / "config.yml").is_file()
    if resume:
        resume = yaml.safe_load((run_dir / "config.yml").read_text()) == config
    if not resume:  # a fresh start: nothing half-written may be appended to
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        train_agent.write_yaml_atomic(run_dir / "config.yml", config)
    elif sb3:  # the deployment run restarts from scratch
        (run_dir / "round_metrics.csv").unlink(missing_ok=True)
    runner = train_agent.run_sb3 if sb3 else train_agent.run_online
    runner(config, run_dir, resume, False)


def _run_geomed_plus(task: dict[str, Any]) -> None:
    """GeoMed+ (Procedure 1, K = #Byzantine this round) on the received gradients, round by round."""
    from agents.monitor import write_atomic
    from agents.rules import RuleAgent
    from gaa_env.aggregators import detection_scores, geomed_plus

    path = Path(task["path"])
    if path.is_file():
        return
    env = train_agent.make_env(task)
    env.reset(seed=task["seed"])
    sim = env.unwrapped.simulator
    agent = RuleAgent(task["driver"])
    lines = ["round,precision,recall,k"]
    for _ in range(task["rounds"]):
        current = sim.current
        k = int(current.byzantine.sum())
        scores = detection_scores(geomed_plus(current.received, k), current.byzantine)
        _, _, terminated, truncated, info = agent.play(env.unwrapped)
        lines.append(f"{info['round']},{scores['precision']},{scores['recall']},{k}")
        if terminated or truncated:
            env.reset()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n")


def run_tasks(tasks: list[dict[str, Any]], processes: int) -> tuple[list[dict[str, Any]], bool]:
    """Run the todo tasks with a progress bar; returns (failures, interrupted)."""
    from tqdm import tqdm

    todo = [t for t in tasks if t["status"] == "todo"]
    failures: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="grid", unit="cell", dynamic_ncols=True)

    def done(result: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{result['name'][:50]} {result['seconds']:.0f}s")
        if result["error"]:
            failures.append(result)
            bar.write(f"failed: {result['name']}: {result['error']}")

    interrupted = False
    try:
        if processes == 1 or len(todo) <= 1:
            for task in todo:
                done(run_task(task))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_init_worker) as pool:
                futures = [pool.submit(run_task, task) for task in todo]
                try:
                    for future in as_completed(futures):
                        done(future.result())
                except (KeyboardInterrupt, SystemExit):
                    for future in futures:
                        future.cancel()
                    raise
    except KeyboardInterrupt:
        interrupted = True
    except SystemExit as stop:  # train_agent's clean Ctrl-C: checkpoint saved, exit code 130
        if stop.code != 130:
            raise
        interrupted = True
    bar.close()
    return failures, interrupted


# ----------------------------------------------------------------------------------- collecting
def _float(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_run(row: dict[str, Any]) -> dict[str, Any]:
    """Metrics of a finished run folder + its curves (test accuracy, GAA+ precision per round)."""
    run_dir = Path(row["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    accuracy: dict[int, float] = {}
    precision, recall, wall, rounds = [], [], [], []
    csv_path = run_dir / "round_metrics.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for rec in csv.DictReader(f):
                acc, acc_round = _float(rec.get("test_accuracy")), _float(rec.get("test_accuracy_round"))
                if acc is not None and acc_round is not None:
                    accuracy[int(acc_round)] = acc
                rounds.append(int(rec["round"]))
                precision.append(_float(rec.get("detection_precision")))
                recall.append(_float(rec.get("detection_recall")))
                wall.append(_float(rec.get("wall_time_per_round")))
    if summary.get("test_accuracy") is not None and summary.get("test_accuracy_round") is not None:
        accuracy[int(summary["test_accuracy_round"])] = float(summary["test_accuracy"])

    timing_path = run_dir / "evaluate_timing.json"
    cpu = json.loads(timing_path.read_text()).get("cpu_seconds") if timing_path.is_file() else None

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(kept)) if kept else None

    from gaa_env.aggregators import AGGREGATORS

    has_credit = row["algo"] not in AGGREGATORS or AGGREGATORS[row["algo"]].returns_credit
    return {
        "final_test_accuracy": summary.get("test_accuracy"),
        "best_test_accuracy": max(accuracy.values()) if accuracy else None,
        "final_quasi_loss": summary.get("quasi_loss"),
        "byzantine_credit_last100": summary.get("byzantine_credit_last100") if has_credit else None,
        "detection_precision_mean": mean(precision) if has_credit else None,
        "detection_recall_mean": mean(recall) if has_credit else None,
        "wall_time_per_round_mean": mean(wall[1:] if len(wall) > 1 else wall),
        "rounds_done": summary.get("round"),
        "cpu_seconds": cpu,
        "_accuracy_curve": sorted(accuracy.items()),
        "_precision_curve": (rounds, precision) if has_credit else None,
    }


def result_rows(rows: list[dict[str, Any]], failed: set[str]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        config = row["config"]
        rec = {k: row.get(k) for k in RESULT_COLUMNS if k in row}
        rec["_config"] = config
        rec.update({"rounds": config.get("rounds"), "total_steps": config.get("total_steps"),
                    "eval_rounds": config.get("eval_rounds") if "total_steps" in config else None})
        if row["name"] in failed:
            rec["status"] = "failed"
        elif row["status"] != "n/a" and finished(row["run_dir"]):
            rec["status"] = "done"
            rec.update(read_run(row))
        elif row["status"] != "n/a":
            rec["status"] = "missing"
        for key, value in (config.get("env_kwargs") or {}).items():
            if key not in ENV_AXES:
                rec[f"env.{key}"] = value
        for key, value in (config.get("hyperparams") or {}).items():
            rec[f"hp.{key}"] = value
        out.append(rec)
    return out


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_results_csv(path: Path, results: list[dict[str, Any]]) -> None:
    from agents.monitor import write_atomic

    extra = sorted({k for r in results for k in r if k.startswith(("env.", "hp."))})
    columns = [*RESULT_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for rec in results:
        writer.writerow([csv_value(rec.get(c)) for c in columns])
    write_atomic(path, buffer.getvalue())


# ----------------------------------------------------------------------------------- tables
def stats(values: list[float | None]) -> tuple[float, float, int] | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return None
    return float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0, len(kept)


def fmt(values: list[float | None], scale: float = 1.0, digits: int = 1) -> str:
    s = stats(values)
    if s is None:
        return "–"
    mean, std, n = s
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


def label_order(results: list[dict[str, Any]]) -> list[str]:
    order: list[str] = []
    for rec in results:
        if rec["label"] not in order:
            order.append(rec["label"])
    return order


def groups(results: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for rec in results:
        out[tuple(rec[k] for k in keys)].append(rec)
    return out


def attack_key(env: str, attack: str, tampering: str, *rest: Any) -> tuple:
    """Report order: static attack first, RF first (the paper's Fig. 4), then the others by name."""
    return (env, attack != "static", attack, tampering != "rf", tampering, *rest)


def status_cell(recs: list[dict[str, Any]], value: str) -> str:
    done = [r for r in recs if r["status"] == "done"]
    if not done:
        states = sorted({r["status"] for r in recs})
        return "n/a" if states == ["n/a"] else "/".join(states)
    mark = "*" if any(r.get("relaxed") for r in done) else ""
    return value + mark


def long_table(results: list[dict[str, Any]]) -> list[str]:
    multi_env = len({r["env"] for r in results}) > 1
    head = ["algo", "attack", "tampering", "β", "seeds", "final acc. %", "best acc. %", "final f_B",
            "Byz. credit (last 100)", "GAA+ precision", "GAA+ recall", "ms/round"]
    if multi_env:
        head.insert(0, "env")
    lines = ["GAA+ columns: the K = #Byzantine smallest credits of each agent's α, averaged over the rounds. For a "
             "rule with one-hot or uniform credit the ties go by worker index, so they mean little there; `–` for "
             "rules without a credit vector (median, trimmed mean, Bulyan, centered clipping).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = label_order(results)
    keyed = groups(results, ("env", "label", "attack", "tampering", "beta"))
    for key in sorted(keyed, key=lambda k: attack_key(k[0], k[2], k[3], order.index(k[1]), k[4])):
        recs = keyed[key]
        done = [r for r in recs if r["status"] == "done"]
        if not done:
            reason = "; ".join(sorted({r.get("reason") or r["status"] for r in recs}))
            cells = [f"{status_cell(recs, '')} ({reason})"] + ["–"] * 6
        else:
            cells = [status_cell(recs, fmt([r["final_test_accuracy"] for r in done], 100)),
                     fmt([r["best_test_accuracy"] for r in done], 100),
                     fmt([r["final_quasi_loss"] for r in done], 1, 3),
                     fmt([r["byzantine_credit_last100"] for r in done], 1, 3),
                     fmt([r["detection_precision_mean"] for r in done], 1, 2),
                     fmt([r["detection_recall_mean"] for r in done], 1, 2),
                     fmt([r["wall_time_per_round_mean"] for r in done], 1000, 1)]
        row = [key[1], key[2], key[3], f"{key[4]:g}", str(len(done)), *cells]
        if multi_env:
            row.insert(0, key[0])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def pivot_tables(results: list[dict[str, Any]], figures: dict[tuple, str] | None = None) -> list[str]:
    """Final accuracy, label × beta, per (env, attack, tampering), each followed by its bar figure."""
    order = label_order(results)
    lines: list[str] = []
    references = [r for r in results if r["attack"] == "none"]
    for (env, attack, tampering), recs in sorted(groups(results, ("env", "attack", "tampering")).items(),
                                                 key=lambda kv: attack_key(*kv[0])):
        if attack == "none":
            continue
        betas = sorted({r["beta"] for r in recs})
        lines += [f"**{env}, {attack} attack, {tampering} tampering** — final test accuracy % (mean ± std over "
                  f"seeds)", "", "| algo | " + " | ".join(f"β = {b:g}" for b in betas) + " |",
                  "|---|" + "---|" * len(betas)]
        by = groups(recs, ("label", "beta"))
        for label in [lab for lab in order if any(r["label"] == lab for r in recs)]:
            cells = []
            for beta in betas:
                group = by.get((label, beta))
                done = [r for r in group or [] if r["status"] == "done"]
                cells.append("" if not group else status_cell(group, fmt([r["final_test_accuracy"] for r in done],
                                                                         100)))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, refs in groups([r for r in references if r["env"] == env], ("label",)).items():
            done = [r for r in refs if r["status"] == "done"]
            value = fmt([r["final_test_accuracy"] for r in done], 100)
            lines.append(f"| {label[0]}, no attack | " + " | ".join([value] * len(betas)) + " |")
        lines.append("")
        if figures and (env, attack, tampering) in figures:
            lines += [figures[(env, attack, tampering)], ""]
    return lines


def time_table(results: list[dict[str, Any]]) -> list[str]:
    """Table 3 style: mean wall time per round per rule (static-attack runs), per (env, n)."""
    lines: list[str] = []
    done = [r for r in results if r["status"] == "done" and r.get("wall_time_per_round_mean") is not None]
    order = label_order(results)
    for (env, n), recs in sorted(groups(done, ("env", "n_workers")).items(), key=lambda kv: str(kv[0])):
        static = [r for r in recs if r["attack"] == "static"] or recs
        which = "static-attack runs" if static is not recs or all(r["attack"] == "static" for r in recs) else "runs"
        lines += [f"**{env}, n = {n} workers** — mean wall time per round over each run, averaged over the {which} "
                  "(β and seeds pooled)", "", "| algo | ms / round | s / 100 rounds | runs |", "|---|---|---|---|"]
        by = groups(static, ("label",))
        for label in [lab for lab in order if (lab,) in by]:
            values = [r["wall_time_per_round_mean"] for r in by[(label,)]]
            lines.append(f"| {label} | {fmt(values, 1000, 1)} | {fmt(values, 10, 2)} | {len(values)} |")
        lines.append("")
    return lines


# ----------------------------------------------------------------------------------- figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _scale_note(recs: list[dict[str, Any]]) -> str:
    rounds = sorted({r["rounds"] or r["eval_rounds"] for r in recs if (r["rounds"] or r["eval_rounds"])})
    seeds = sorted({r["seed"] for r in recs})
    return f"{'/'.join(str(x) for x in rounds)} rounds, seeds {','.join(str(s) for s in seeds)}"


def plot_accuracy_bars(results: list[dict[str, Any]], out: Path) -> dict[tuple, Path]:
    plt = _plt()
    order = label_order(results)
    paths = {}
    references = [r for r in results if r["attack"] == "none" and r["status"] == "done"]
    for (env, attack, tampering), recs in sorted(groups(results, ("env", "attack", "tampering")).items(),
                                                 key=lambda kv: attack_key(*kv[0])):
        if attack == "none":
            continue
        labels = [lab for lab in order if any(r["label"] == lab for r in recs)]
        betas = sorted({r["beta"] for r in recs})
        by = groups(recs, ("label", "beta"))
        width = 0.8 / max(len(labels), 1)
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.28 * len(labels) * len(betas)), 4.2))
        colors = plt.get_cmap("tab20")
        for i, label in enumerate(labels):
            for j, beta in enumerate(betas):
                group = by.get((label, beta))
                if not group:
                    continue
                x = j + (i - (len(labels) - 1) / 2) * width
                s = stats([r["final_test_accuracy"] for r in group if r["status"] == "done"])
                if s is None:
                    ax.text(x, 0.02, f"{label}: n/a", rotation=90, ha="center", va="bottom", fontsize=7)
                    continue
                ax.bar(x, s[0], width, yerr=s[1] if s[2] > 1 else None, color=colors(i % 20), capsize=2,
                       label=label if j == min(jj for jj, b in enumerate(betas) if (label, b) in by) else None)
        for k, (label, refs) in enumerate(groups([r for r in references if r["env"] == env], ("label",)).items()):
            s = stats([r["final_test_accuracy"] for r in refs])
            if s is not None:
                ax.axhline(s[0], color="k", linestyle=("--", ":", "-.")[k % 3], linewidth=1,
                           label=f"{label[0]}, no attack")
        ax.set_xticks(range(len(betas)), [f"β = {b:g}" for b in betas])
        ax.set_ylim(0, 1)
        ax.set_ylabel("final test accuracy")
        ax.set_title(f"{env}: {attack} attack, {tampering} ({_scale_note(recs)})", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
        path = out / f"accuracy_{env_short(env)}_{attack}-{tampering}.png"
        _save(fig, path)
        plt.close(fig)
        paths[(env, attack, tampering)] = path
    return paths


def plot_curves(results: list[dict[str, Any]], out: Path, attacks: list[str]) -> list[Path]:
    plt = _plt()
    order = label_order(results)
    paths = []
    done = [r for r in results if r["status"] == "done" and r["attack"] in attacks and r.get("_accuracy_curve")]
    for (env, attack, tampering, beta), recs in sorted(groups(done, ("env", "attack", "tampering", "beta")).items(),
                                                       key=lambda kv: attack_key(*kv[0])):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        by = groups(recs, ("label",))
        for label in [lab for lab in order if (lab,) in by]:
            curves = [dict(r["_accuracy_curve"]) for r in by[(label,)]]
            xs = sorted(set.intersection(*(set(c) for c in curves)))
            if not xs:
                continue
            ys = np.array([[c[x] for x in xs] for c in curves])
            ax.plot(xs, ys.mean(axis=0), marker=".", label=f"{label} ({seeds_text(len(curves))})")
            if len(curves) > 1:
                ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), alpha=0.15)
        attack_params = recs[0]["_config"]["env_kwargs"].get("attack_params") or {}
        if attack == "pretense":
            ax.axvline(int(attack_params.get("pretense_rounds", 250)), color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        params = f", {attack_params}" if attack_params else ""
        ax.set_title(f"{env}: {attack}{params}, {tampering}, β = {beta:g} (min–max over seeds)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        path = out / f"curves_{env_short(env)}_{attack}-{tampering}_b{beta:g}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def seeds_text(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_detection(results: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """GAA+ precision of the gaa runs vs GeoMed+ on the same env kwargs and seeds, per round."""
    plt = _plt()
    paths = []
    gaa = [r for r in results if r["algo"] == "gaa" and r["status"] == "done" and r.get("_precision_curve")
           and r["attack"] != "none"]
    geomed_csv = {row["name"]: row.get("geomed_plus_csv") for row in rows}
    for (env, attack, tampering, beta), recs in sorted(groups(gaa, ("env", "attack", "tampering", "beta")).items(),
                                                       key=lambda kv: attack_key(*kv[0])):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        rounds_max = max(max(r["_precision_curve"][0]) for r in recs)
        window = max(1, rounds_max // 50)
        by = groups(recs, ("label",))
        for label, group in by.items():
            curves = [np.array([np.nan if v is None else v for v in r["_precision_curve"][1]]) for r in group]
            length = min(len(c) for c in curves)
            ys = _smooth(np.nanmean([c[:length] for c in curves], axis=0), window)
            xs = np.arange(1, len(ys) + 1) + (window - 1) // 2 if window > 1 else np.arange(1, len(ys) + 1)
            ax.plot(xs, ys, label=f"GAA+ ({label[0]}, {seeds_text(len(curves))})")
            geo = []
            for r in group:
                path = geomed_csv.get(r["name"])
                if path and Path(path).is_file():
                    with open(path, newline="") as f:
                        geo.append(np.array([float(rec["precision"]) for rec in csv.DictReader(f)]))
            if geo:
                length = min(len(g) for g in geo)
                ys = _smooth(np.mean([g[:length] for g in geo], axis=0), window)
                xs = np.arange(1, len(ys) + 1) + (window - 1) // 2 if window > 1 else np.arange(1, len(ys) + 1)
                suffix = f" [env of {label[0]}]" if len(by) > 1 else ""
                ax.plot(xs, ys, linestyle="--", label=f"GeoMed+{suffix} ({seeds_text(len(geo))})")
        ax.set_xlabel("round")
        ax.set_ylabel(f"precision (K = #Byzantine; moving mean, {window} rounds)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{env}: detection, {attack} {tampering}, β = {beta:g}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        path = out / f"detection_{env_short(env)}_{attack}-{tampering}_b{beta:g}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def copy_heatmaps(results: list[dict[str, Any]], out: Path, algos: list[str] | None,
                  seeds: list[int] | None) -> list[tuple[dict[str, Any], Path]]:
    grid_seeds = sorted({r["seed"] for r in results})
    seeds = seeds if seeds is not None else grid_seeds[:1]
    copied = []
    for rec in results:
        src = Path(rec["run_dir"] or "") / "credit_heatmap.png"
        if rec["status"] != "done" or rec["seed"] not in seeds or not src.is_file():
            continue
        if algos is not None and rec["algo"] not in algos:
            continue
        (out / "heatmaps").mkdir(parents=True, exist_ok=True)
        dst = out / "heatmaps" / f"{rec['name']}.png"
        shutil.copy2(src, dst)
        copied.append((rec, dst))
    return copied


# ----------------------------------------------------------------------------------- markdown
def render(results: list[dict[str, Any]], figures: dict[str, Any],
           heatmaps: list[tuple[dict[str, Any], Path]], base: Path, embed: bool) -> list[str]:
    def link(path: Path) -> str:
        rel = os.path.relpath(path, base)
        return f"![{path.stem}]({rel})" if embed else f"- [{path.name}]({rel})"

    lines = ["## Final test accuracy (Fig. 4 analogue)", "",
             "`*`: rule run with `strict=False` (its precondition n ≥ 2f + 3 fails at this β; the paper ran it "
             "anyway). `n/a`: the rule's precondition fails (e.g. Bulyan needs n ≥ 4f + 3).", "",
             *pivot_tables(results, {key: link(path) for key, path in figures["accuracy"].items()})]
    if figures["curves"]:
        lines += ["## Learning curves (Fig. 5 analogue)", "", *(link(p) for p in figures["curves"]), ""]
    if figures["detection"]:
        lines += ["## Detection: GAA+ vs GeoMed+", "",
                  "GAA+ = the K smallest credits of the gaa run; GeoMed+ = Procedure 1 on the received gradients of "
                  "a process with the same env kwargs and seed, driven by the GeoMed rule; K = number of Byzantine "
                  "workers in the round.", "", *(link(p) for p in figures["detection"]), ""]
    lines += ["## Time per round (Table 3 analogue)", "",
              "Wall clock on a shared CPU (other jobs were running): includes the worker gradients, the env's "
              "per-worker observation features and the periodic test evaluations, i.e. the whole round.", "",
              *time_table(results)]
    if heatmaps:
        lines += ["## Credit heat-maps", ""]
        for rec, path in heatmaps:
            title = f"{rec['label']}, {rec['attack']} {rec['tampering']}, β = {rec['beta']:g}, seed {rec['seed']}"
            rel = os.path.relpath(path, base)
            lines.append(f"![{title}]({rel})" if embed else f"- [{title}]({rel})")
        lines.append("")
    return lines


def write_markdown(results: list[dict[str, Any]], figures: dict[str, Any],
                   heatmaps: list[tuple[dict[str, Any], Path]], opts: dict[str, Any], command: str,
                   n_geomed_plus: int = 0) -> None:
    from agents.monitor import write_atomic

    out = Path(opts["out"])
    scale = scale_statement(results, n_geomed_plus)
    summary = ["# Evaluation summary", "", f"Command: `{command}`", "", scale, "",
               *render(results, figures, heatmaps, out, embed=False),
               "## All runs (mean ± std over seeds)", "", *long_table(results), ""]
    write_atomic(out / "summary.md", "\n".join(summary))
    if opts["report"]:
        report = Path(opts["report"])
        report.parent.mkdir(parents=True, exist_ok=True)
        notes = Path(opts["report_notes"]).read_text().strip() if opts["report_notes"] else ""
        text = [f"# {opts['report_title']}", "", f"Regenerate with `{command}` (cells already run are skipped; "
                f"delete `{opts['runs_dir']}` to recompute).", "", scale, "",
                *render(results, figures, heatmaps, report.parent, embed=True),
                *([notes, ""] if notes else []),
                "## All runs (mean ± std over seeds)", "", *long_table(results), "",
                f"Per-run rows: [{os.path.relpath(out / 'results.csv', report.parent)}]"
                f"({os.path.relpath(out / 'results.csv', report.parent)}).", ""]
        write_atomic(report, "\n".join(text))


def scale_statement(results: list[dict[str, Any]], n_geomed_plus: int = 0) -> str:
    """What was run, at which scale, and what it cost (process CPU time of one torch thread)."""
    from gaa_env import ENV_IDS
    from gaa_env.envs.config import BENCHMARKS

    done = [r for r in results if r["status"] == "done"]
    if not done:
        return "No finished runs."
    rounds = sorted({r["rounds"] or r["eval_rounds"] for r in done if r["rounds"] or r["eval_rounds"]})
    seeds = sorted({r["seed"] for r in done})
    n = sorted({r["n_workers"] for r in done if r["n_workers"]})
    paper = sorted({f"{BENCHMARKS[ENV_IDS[r['env']]].max_rounds:,} for {r['env']}" for r in done
                    if r["env"] in ENV_IDS})
    measured = [r["cpu_seconds"] for r in done if r.get("cpu_seconds") is not None]
    estimated = [(r["wall_time_per_round_mean"] or 0) * (r["rounds_done"] or 0) for r in done
                 if r.get("cpu_seconds") is None]
    cost = f"≈ {(sum(measured) + sum(estimated)) / 60:.0f} CPU-minutes for the runs (one torch thread"
    if estimated:
        cost += f"; {len(estimated)} of them estimated from their wall time"
    cost += ")" + (f", plus {n_geomed_plus} GeoMed+ processes of about one GeoMed run each" if n_geomed_plus else "")
    return (f"**Scale:** {len(done)} finished runs; {', '.join(map(str, rounds))} rounds per run "
            f"(the paper: {'; '.join(paper) or '?'}); seeds {', '.join(map(str, seeds))}; n = "
            f"{', '.join(map(str, n))} workers; {cost}.")


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        spec = load_spec(args)
        opts = options(spec)
        tabulate_only = opts["from_runs"] and not any(key in spec for key in (*AXES, "grids"))
        cells = [] if tabulate_only else [build_cell(cell, opts) for cell in expand(spec)]
        extra = from_runs(opts["from_runs"])
    except SpecError as err:
        raise SystemExit(f"error: {err}") from None
    unused = sorted(set(spec_hyperparam_algos(spec)) - {c["algo"] for c in cells})
    if unused:
        raise SystemExit(f"error: hyperparams given for {', '.join(unused)}, not in the grid")
    rows = cells + extra
    if not rows:
        raise SystemExit("error: the grid is empty")
    assign_labels(rows)
    detections = geomed_plus_tasks(cells, opts)
    n_done = sum(c["status"] == "done" for c in cells)
    n_na = sum(c["status"] == "n/a" for c in cells)
    todo = [dict(c, kind="cell") for c in cells if c["status"] == "todo"]
    print(f"{len(cells)} cells: {n_done} done (skipped), {n_na} n/a, {len(todo)} to run; "
          f"{sum(t['status'] == 'todo' for t in detections)} GeoMed+ processes to run; "
          f"{len(extra)} runs from --from-runs", file=sys.stderr)
    if opts["dry_run"]:
        for cell in cells:
            print(f"{cell['status']:5} {cell['label']:30} {cell['name']}" + (f"  ({cell['reason']})"
                                                                            if cell["reason"] else ""))
        return 0
    tasks = [*(dict(c, kind="cell") for c in cells if c["status"] != "n/a"), *detections]
    failures, interrupted = run_tasks(tasks, opts["processes"])

    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    results = result_rows(rows, {f["name"] for f in failures})
    write_results_csv(out / "results.csv", results)
    figures = {"accuracy": plot_accuracy_bars(results, out),
               "curves": plot_curves(results, out, opts["curve_attacks"]),
               "detection": plot_detection(results, cells, out)}
    heatmaps = copy_heatmaps(results, out, opts["heatmaps"], opts["heatmap_seeds"])
    command = "python evaluate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_markdown(results, figures, heatmaps, opts, command.strip(), len(detections))
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'}" + (f", {opts['report']}" if opts["report"] else ""),
          file=sys.stderr)
    if interrupted:
        print("interrupted: rerun the same command to continue (finished cells are skipped)", file=sys.stderr)
        return 130
    if failures:
        for failure in failures:
            print(f"error: cell {failure['name']} failed: {failure['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
