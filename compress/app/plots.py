"""PNG plots from the artifacts alone (matplotlib is optional: ``pip install matplotlib``).

Epochs are whole numbers, so epoch axes tick at integers only; legends sit beside the axes, not on the
curves, and layouts are constrained so that titles, labels and legends never overlap.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

from compress.errors import ConfigError
from compress.files import staged
from compress.layout import ALPHA_BETA_PNG, CANDIDATES_PNG
from compress.store.card import exit_depths

FONT = {"title": 10, "label": 9, "tick": 8, "legend": 8, "note": 7}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install matplotlib") from None
    return plt


def save(fig, path: str) -> None:
    """Write ``fig`` as a PNG through a temporary file: a stop mid-write leaves the old plot or none."""
    with staged(path) as tmp:
        fig.savefig(tmp, dpi=120)


def integer_epochs(ax, epochs: List[int]) -> None:
    """Ticks at whole epochs only (matplotlib would otherwise mark 1.5 on a three-epoch run); a run of one
    or two epochs gets half an epoch of margin, since a locator cannot place integers in a narrower view."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if max(epochs) - min(epochs) < 2:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def draw_controllers(axes, history: List[Dict], widths: List[Dict], depths: Sequence[int], **style) -> None:
    """p (width, from α) on ``axes[0]`` and q (exit depth, from β, over ``depths``) on ``axes[1]`` over
    search epochs.

    One colour per candidate, so several searches (seeds) drawn with different ``style`` stay readable.
    """
    epochs = [row["epoch"] for row in history]
    for i, w in enumerate(widths):
        axes[0].plot(epochs, [row["p"][i] for row in history], color=f"C{i}", label=f"d={w['hidden']}, D={w['inner']}",
                     **style)
    for l, n in enumerate(depths):
        axes[1].plot(epochs, [row["q"][l] for row in history], color=f"C{l}", label=f"{n} layer(s)", **style)
    titles = ("width controller p = softmax(α/τ)", "depth controller q = softmax(β/τ)")
    for ax, title, what in zip(axes, titles, ("width", "exit depth")):
        ax.set_title(title, fontsize=FONT["title"])
        ax.set_xlabel("search epoch", fontsize=FONT["label"])
        ax.set_ylabel(f"probability of each {what}", fontsize=FONT["label"])
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=FONT["tick"])
        integer_epochs(ax, epochs)


def legend_beside(ax, **kwargs) -> None:
    """The legend right of the axes, outside the data (a constrained layout makes room for it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=FONT["legend"], **kwargs)


def plot_search(card: Dict, path: str) -> str:
    """p and q of one search card over its epochs, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    draw_controllers(axes, card["history"], card["widths"], exit_depths(card), marker="o")
    for ax in axes:
        legend_beside(ax)
    save(fig, path)
    plt.close(fig)
    return path


def plot_candidates(card: Dict, path: str) -> str:
    """FLOPs of every candidate (width × depth) against its parameters, the decision highlighted."""
    from matplotlib.ticker import EngFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    full = card["full_flops"]
    for c in card["candidates"]:
        x, y = c["params"], 100 * c["flops"] / full
        ax.scatter(x, y, color="tab:blue", s=18, label="candidate")
        ax.annotate(f"{c['hidden']}/{c['inner']}×{c['layers']}", (x, y), xytext=(4, 3), textcoords="offset points",
                    fontsize=FONT["note"])
    d = card["decision"]
    ax.scatter(d.get("params", 0), 100 * d["flops"] / full, color="tab:red", s=80, marker="*", label="decision")
    ax.set_xlabel("parameters", fontsize=FONT["label"])
    ax.set_ylabel("FLOPs, % of the full supernet", fontsize=FONT["label"])
    ax.set_title("search space: cost of every candidate (hidden/inner × layers)", fontsize=FONT["title"])
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.tick_params(labelsize=FONT["tick"])
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per kind, not per candidate
    ax.legend(unique.values(), unique.keys(), loc="best", fontsize=FONT["legend"])
    save(fig, path)
    plt.close(fig)
    return path


def plot_run(run_dir: str, card: Dict) -> List[str]:
    return [plot_search(card, os.path.join(run_dir, ALPHA_BETA_PNG)),
            plot_candidates(card, os.path.join(run_dir, CANDIDATES_PNG))]
