"""Plots: epoch axes tick at whole epochs, legends sit beside the axes and overlap nothing, files are written."""
from __future__ import annotations

import pytest

from compress.app.plots import draw_controllers, plot_candidates, plot_search

WIDTHS = [{"hidden": 16, "inner": 32}, {"hidden": 8, "inner": 16}]


def history(epochs: int) -> list:
    return [{"epoch": e, "p": [0.5 + 0.1 * e / epochs, 0.5 - 0.1 * e / epochs], "q": [0.6, 0.4]}
            for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 40])
def test_epoch_ticks_are_integers(epochs):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, axes = plt.subplots(1, 2)
    draw_controllers(axes, history(epochs), WIDTHS, [1, 2], marker="o")
    fig.canvas.draw()
    for ax in axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert ax.get_xlabel() == "search epoch" and ax.get_ylabel()
    plt.close(fig)


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    card = {"history": history(3), "widths": WIDTHS, "full_flops": 100.0,
            "candidates": [{"hidden": 16, "inner": 32, "layers": 1, "flops": 100.0, "params": 5000},
                           {"hidden": 8, "inner": 16, "layers": 1, "flops": 40.0, "params": 2000}],
            "decision": {"flops": 40.0, "params": 2000}}
    for path in (plot_search(card, str(tmp_path / "s.png")), plot_candidates(card, str(tmp_path / "c.png"))):
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_failed_write_keeps_the_previous_plot_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    target = tmp_path / "s.png"
    plot_search({"history": history(3), "widths": WIDTHS}, str(target))
    before = target.read_bytes()

    def stopped(fig, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(plt.Figure, "savefig", stopped)
    with pytest.raises(KeyboardInterrupt):
        plot_search({"history": history(5), "widths": WIDTHS}, str(target))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


def test_search_plot_legends_overlap_nothing(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    plot_search({"history": history(5), "widths": WIDTHS}, str(tmp_path / "s.png"))
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    left, right = (ax.get_tightbbox(renderer) for ax in fig.axes)  # axes with their labels and legend
    for ax in fig.axes:
        assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # beside
    assert left.x1 <= right.x0 and right.x1 <= fig.bbox.x1
    monkeypatch.undo()
    plt.close(fig)
