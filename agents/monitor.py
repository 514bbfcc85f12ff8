"""Per-round metrics of a run: TensorBoard scalars, an append-only CSV, and the credit heat-map.

Every learning algorithm (GAA, SB3, fixed rules) reports the env's ``info`` through
:class:`RunMonitor`, so runs are comparable scalar by scalar.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

SCALARS = ("reward", "quasi_loss", "byzantine_credit", "detection_precision", "detection_recall",
           "wall_time_per_round")
HEATMAP_MAX_COLUMNS = 1000


def write_atomic(path: str | Path, text: str) -> None:
    """Write a whole file via a temp file + rename, so a crash never leaves it half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunMonitor:
    """Collects per-round metrics; ``tensorboard=False`` keeps only the CSV and the summary."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, prefix: str = "round") -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        csv_path = self.run_dir / f"{prefix}_metrics.csv"
        new = not csv_path.exists()
        self._csv_file = open(csv_path, "a", newline="")  # noqa: SIM115  (closed in close())
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(["round", *SCALARS, "test_accuracy", "test_accuracy_round"])
        self.credits: list[np.ndarray] = []
        self.byzantine: list[np.ndarray] = []
        self.last_info: dict[str, Any] = {}
        self._last_time = time.perf_counter()
        self._last_accuracy_round: int | None = None

    def log_round(self, reward: float, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        values = {"reward": reward, "wall_time_per_round": now - self._last_time}
        self._last_time = now
        values.update({k: info[k] for k in SCALARS if k in info and k not in values})
        step = int(info["round"])
        measured_at = info.get("test_accuracy_round")
        new_measurement = measured_at is not None and measured_at != self._last_accuracy_round
        self._last_accuracy_round = measured_at
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{self.prefix}/{key}", float(value), step)
            if new_measurement:
                self.writer.add_scalar(f"{self.prefix}/test_accuracy", info["test_accuracy"], measured_at)
        self._csv.writerow([step, *(values.get(k, "") for k in SCALARS), info.get("test_accuracy", ""),
                            info.get("test_accuracy_round", "")])
        if "credit" in info:
            self.credits.append(np.asarray(info["credit"], dtype=np.float32))
            self.byzantine.append(np.asarray(info["byzantine_mask"], dtype=bool))
        self.last_info = info

    def flush(self) -> None:
        self._csv_file.flush()
        if self.writer is not None:
            self.writer.flush()

    def credit_heatmap(self) -> np.ndarray | None:
        """``[n, rounds]`` credits (column-subsampled to at most 1,000 rounds) or None if nothing logged."""
        if not self.credits:
            return None
        credits = np.stack(self.credits, axis=1)
        stride = max(1, credits.shape[1] // HEATMAP_MAX_COLUMNS)
        return credits[:, ::stride]

    def save_heatmap(self, title: str = "") -> Path | None:
        """Workers × rounds credit heat-map beside the ground-truth Byzantine roles; PNG + TensorBoard."""
        credits = self.credit_heatmap()
        if credits is None:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stride = max(1, len(self.credits) // HEATMAP_MAX_COLUMNS)
        byzantine = np.stack(self.byzantine, axis=1)[:, ::stride]
        fig, (ax_roles, ax) = plt.subplots(1, 2, figsize=(12, 4), sharey=True,
                                           gridspec_kw={"width_ratios": [1, 4]})
        ax_roles.imshow(byzantine, aspect="auto", cmap="Reds", vmin=0, vmax=1.5, interpolation="nearest")
        ax_roles.set_title("Byzantine (red)")
        ax_roles.set_xlabel(f"round (every {stride})")
        ax_roles.set_ylabel("worker")
        image = ax.imshow(credits, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xlabel(f"round (every {stride})")
        ax.set_title(title or "credit per worker and round")
        fig.colorbar(image, ax=ax, label="credit α")
        path = self.run_dir / "credit_heatmap.png"
        tmp = path.with_name("credit_heatmap.tmp.png")
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
        if self.writer is not None:
            self.writer.add_figure(f"{self.prefix}/credit_heatmap", fig)
        plt.close(fig)
        return path

    def summary(self) -> dict[str, Any]:
        info = self.last_info
        recent = self.credits[-100:]
        mask = self.byzantine[-100:]
        byz_mass = float(np.mean([c[m].sum() for c, m in zip(recent, mask)])) if recent else None
        return {"round": info.get("round"), "test_accuracy": info.get("test_accuracy"),
                "test_accuracy_round": info.get("test_accuracy_round"), "quasi_loss": info.get("quasi_loss"),
                "byzantine_credit_last100": byz_mass}

    def close(self, summary_name: str = "summary.json", extra: dict[str, Any] | None = None) -> dict[str, Any]:
        summary = {**self.summary(), **(extra or {})}
        write_atomic(self.run_dir / summary_name, json.dumps(summary, indent=2, default=str))
        self._csv_file.close()
        if self.writer is not None:
            self.writer.close()
        return summary
