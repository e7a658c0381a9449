"""Pictures llmtune writes next to its metrics: training curves and confusion matrices.

matplotlib is imported inside each function with the Agg backend (no display needed, and
`import llmtune` stays light).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Trainer's bookkeeping entries in log_history that are not metrics worth plotting.
NOT_METRICS = {"epoch", "step", "total_flos", "grad_norm", "learning_rate"}
NOT_METRIC_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(log_history: list[dict[str, Any]]) -> tuple[dict[str, list], dict[str, list]]:
    """Split Trainer's log history into loss curves and eval metric curves, each {name: [(step, value)]}."""
    losses: dict[str, list] = {}
    metrics: dict[str, list] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if key in NOT_METRICS or key.endswith(NOT_METRIC_SUFFIXES) or not isinstance(value, (int, float)):
                continue
            if key == "loss":
                losses.setdefault("train loss", []).append((step, value))
            elif key == "eval_loss":
                losses.setdefault("eval loss", []).append((step, value))
            elif key.startswith("eval_"):
                metrics.setdefault(key, []).append((step, value))
    return losses, metrics


def training_curves(log_history: list[dict[str, Any]], path: str | Path) -> Path:
    """Plot train loss, eval loss and eval metrics over steps from `trainer.state.log_history`.

    Args:
        log_history: Trainer's log entries (dicts with `step` and logged values).
        path: the PNG to write.

    Returns:
        The path written.
    """
    plt = _pyplot()
    losses, metrics = _series(log_history)
    panels = [("loss", losses)] + ([("eval metrics", metrics)] if metrics else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for name, points in curves.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=name)
        if not curves:
            ax.text(0.5, 0.5, "nothing logged (set training.logging_steps)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_matrix(matrix: list[list[int]], labels: list[str], path: str | Path) -> Path:
    """Draw a confusion matrix (rows: true label, columns: predicted label) with counts in the cells.

    Returns:
        The path written.
    """
    plt = _pyplot()
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
