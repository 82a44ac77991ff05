"""PNG plots from the artifacts alone (matplotlib is optional: ``pip install matplotlib``)."""
from __future__ import annotations

import os
from typing import Dict, List

from compress.errors import ConfigError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install matplotlib") from None
    return plt


def draw_controllers(axes, history: List[Dict], widths: List[Dict], **style) -> None:
    """p (width, from α) on ``axes[0]`` and q (exit depth, from β) on ``axes[1]`` over search epochs.

    One colour per candidate, so several searches (seeds) drawn with different ``style`` stay readable.
    """
    epochs = [row["epoch"] for row in history]
    for i, w in enumerate(widths):
        axes[0].plot(epochs, [row["p"][i] for row in history], color=f"C{i}", label=f"d={w['hidden']}, D={w['inner']}",
                     **style)
    for l in range(len(history[0]["q"])):
        axes[1].plot(epochs, [row["q"][l] for row in history], color=f"C{l}", label=f"{l + 1} layer(s)", **style)
    for ax, title in zip(axes, ("width controller p = softmax(α/τ)", "depth controller q = softmax(β/τ)")):
        ax.set_title(title)
        ax.set_xlabel("search epoch")
        ax.set_ylim(0, 1)


def plot_search(card: Dict, path: str) -> str:
    """p and q of one search card over its epochs, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    draw_controllers(axes, card["history"], card["widths"], marker="o")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_candidates(card: Dict, path: str) -> str:
    """FLOPs of every candidate (width × depth), the decision highlighted."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    full = card["full_flops"]
    for c in card["candidates"]:
        ax.scatter(c["params"], 100 * c["flops"] / full, color="tab:blue")
        ax.annotate(f"{c['hidden']}/{c['inner']}x{c['layers']}", (c["params"], 100 * c["flops"] / full), fontsize=7)
    d = card["decision"]
    ax.scatter(d.get("params", 0), 100 * d["flops"] / full, color="tab:red", s=80, label="decision")
    ax.set_xlabel("parameters")
    ax.set_ylabel("FLOPs, % of full supernet")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_run(run_dir: str, card: Dict) -> List[str]:
    return [plot_search(card, os.path.join(run_dir, "search_alpha_beta.png")),
            plot_candidates(card, os.path.join(run_dir, "search_candidates.png"))]
