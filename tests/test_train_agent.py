"""train_agent.py: one folder per run, TensorBoard scalars, atomic checkpoints, exact resume."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

import train_agent

ENV = ["n_workers:6", "beta:0.5", "test_size:300", "eval_interval:5", "seed:0"]


def run(tmp_path, name, *extra):
    args = ["--env-kwargs", *ENV, "--log-dir", str(tmp_path), "--run-name", name, "--no-progress", *extra]
    assert train_agent.main(args) == 0
    return tmp_path / name


def test_a_gaa_run_writes_its_folder_and_tensorboard_scalars(tmp_path):
    run_dir = run(tmp_path, "gaa", "--algo", "gaa", "--rounds", "10", "--checkpoint-every", "5")
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["algo"] == "gaa" and config["env_kwargs"]["beta"] == 0.5 and config["rounds"] == 10
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["round"] == 10 and 0.0 <= summary["test_accuracy"] <= 1.0
    for name in ("checkpoint.pt", "gaa_policy.pt", "credit_heatmap.png", "round_metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob("*.tmp"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("reward", "quasi_loss", "test_accuracy", "byzantine_credit", "detection_precision",
                "detection_recall", "wall_time_per_round"):
        assert f"round/{tag}" in tags
    assert len(events.Scalars("round/reward")) == 10
    assert [e.step for e in events.Scalars("round/test_accuracy")] == [5, 10]


def test_resume_continues_the_same_learning_process(tmp_path):
    straight = run(tmp_path, "straight", "--algo", "gaa", "--rounds", "20", "--checkpoint-every", "5",
                   "--no-tensorboard")
    partial = run(tmp_path, "partial", "--algo", "gaa", "--rounds", "10", "--checkpoint-every", "5",
                  "--no-tensorboard")
    config = yaml.safe_load((partial / "config.yml").read_text())
    config["rounds"] = 20  # as if the first attempt had been stopped at round 10
    (partial / "config.yml").write_text(yaml.safe_dump(config))
    assert train_agent.main(["--resume", str(partial), "--no-progress"]) == 0

    def rows(path):
        with open(path / "round_metrics.csv") as f:
            return [(r["round"], r["quasi_loss"], r["byzantine_credit"]) for r in csv.DictReader(f)]

    assert rows(partial) == rows(straight)
    a, b = (json.loads((p / "summary.json").read_text()) for p in (straight, partial))
    assert a["test_accuracy"] == b["test_accuracy"]


def test_rules_and_the_oracle_run_through_the_same_cli(tmp_path):
    krum = tmp_path / "krum"
    assert train_agent.main(["--algo", "krum", "--env-kwargs", "n_workers:6", "beta:0.2", "test_size:300",
                             "--rounds", "5", "--log-dir", str(tmp_path), "--run-name", "krum", "--no-progress",
                             "--no-tensorboard"]) == 0
    oracle = run(tmp_path, "oracle", "--algo", "oracle", "--rounds", "5", "--no-tensorboard")
    assert json.loads((oracle / "summary.json").read_text())["byzantine_credit_last100"] == 0.0
    assert json.loads((krum / "summary.json").read_text())["round"] == 5


def test_an_sb3_run_trains_then_deploys(tmp_path):
    run_dir = run(tmp_path, "ppo", "--algo", "ppo", "--total-steps", "16", "--eval-rounds", "5",
                  "--hyperparams", "n_steps:8", "batch_size:8", "--checkpoint-every", "8")
    assert (run_dir / "model.zip").is_file() and (run_dir / "train_summary.json").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["round"] == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "gaa", "--env-kwargs", "betta:0.5"], "unknown environment kwarg(s) ['betta']"),
        (["--algo", "gaa", "--env-kwargs", "beta:1.5"], "beta must be in [0, 1), got 1.5"),
        (["--algo", "gaa", "--env-kwargs", "beta"], "expects key:value pairs"),
        (["--algo", "nope"], "invalid choice: 'nope'"),
        (["--resume", "/nonexistent"], "not a run folder"),
    ],
)
def test_bad_input_exits_non_zero_with_a_one_line_reason(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "train_agent.py", *args, "--log-dir", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
