"""evaluate.py: a tiny grid end to end — results.csv, summary.md, figures, resume, bad input."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--algos", "gaa", "krum", "--betas", "0.2", "0.5", "--seeds", "0", "--rounds", "10",
        "--env-kwargs", "n_workers:6", "test_size:300", "eval_interval:5", "--curve-attacks", "static"]


def rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    assert evaluate.main([*GRID, "--out", str(out)]) == 0
    return out


def test_results_csv_has_one_row_per_cell_with_the_metrics(grid):
    results = rows(grid)
    assert sorted((r["algo"], float(r["beta"])) for r in results) == [
        ("gaa", 0.2), ("gaa", 0.5), ("krum", 0.2), ("krum", 0.5)]
    assert set(evaluate.RESULT_COLUMNS) <= set(results[0])
    for r in results:
        assert r["status"] == "done" and r["rounds"] == "10" and r["n_workers"] == "6"
        assert 0.0 <= float(r["final_test_accuracy"]) <= float(r["best_test_accuracy"]) <= 1.0
        assert float(r["wall_time_per_round_mean"]) > 0 and float(r["final_quasi_loss"]) > 0
        assert (Path(r["run_dir"]) / "summary.json").is_file()
    relaxed = {(r["algo"], r["beta"]): r["relaxed"] for r in results}
    assert relaxed[("krum", "0.5")] == "True" and relaxed[("krum", "0.2")] == "False"  # n=6 < 2f+3 at f=3


def test_summary_and_figures_are_written(grid):
    summary = (grid / "summary.md").read_text()
    assert "| gaa | static | rf | 0.2 | 1 |" in summary and "Time per round" in summary
    for name in ("accuracy_mnist_static-rf.png", "curves_mnist_static-rf_b0.5.png",
                 "detection_mnist_static-rf_b0.5.png"):
        assert (grid / name).stat().st_size > 1000, name
    assert len(list((grid / "heatmaps").glob("*.png"))) == 4
    assert len(list((grid / "runs" / "geomed_plus").glob("*.csv"))) == 2  # one GeoMed+ process per gaa cell


def test_a_second_invocation_skips_every_cell(grid, capsys):
    stamps = {r["name"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in rows(grid)}
    assert evaluate.main([*GRID, "--out", str(grid)]) == 0
    assert "4 done (skipped), 0 n/a, 0 to run; 0 GeoMed+ processes to run" in capsys.readouterr().err
    assert stamps == {r["name"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in rows(grid)}


def test_from_runs_tabulates_existing_run_folders(grid, tmp_path):
    assert evaluate.main(["--from-runs", str(grid / "runs"), "--out", str(tmp_path)]) == 0
    results = rows(tmp_path)
    assert len(results) == 4 and {r["source"] for r in results} == {"from-runs"}
    assert {r["final_test_accuracy"] for r in results} == {r["final_test_accuracy"] for r in rows(grid)}


def test_a_config_file_is_a_union_of_products_with_na_cells(tmp_path, capsys):
    config = tmp_path / "grid.yml"
    config.write_text("rounds: 10\nenv_kwargs: {n_workers: 6}\ngrids:\n"
                      "  - {algos: [mean, bulyan], betas: [0.0, 0.5], seeds: [0, 1]}\n"
                      "  - {algos: gaa, betas: 0.5, env_kwargs: {grad_clip: [none, quasi_norm]}}\n")
    assert evaluate.main(["--config", str(config), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "10 cells: 0 done (skipped), 2 n/a, 8 to run" in captured.err
    assert "gaa grad_clip=quasi_norm" in captured.out


@pytest.mark.parametrize("flags, message", [
    (["--algos", "no_such_algo"], "unknown algo 'no_such_algo'"),
    (["--betas", "1.5"], "beta must be in [0, 1)"),
    (["--env-kwargs", "no_such_kwarg:1"], "unknown environment kwarg(s) ['no_such_kwarg']"),
])
def test_bad_input_exits_non_zero_with_one_line(flags, message, tmp_path):
    with pytest.raises(SystemExit) as exc:
        evaluate.main([*flags, "--out", str(tmp_path), "--dry-run"])
    assert isinstance(exc.value.code, str) and message in exc.value.code and "\n" not in exc.value.code


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "evaluate.py", "--algos", "no_such_algo", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: unknown algo") and len(proc.stderr.strip().splitlines()) == 1
