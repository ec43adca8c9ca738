"""The demo report's charts are read by people: every stage has a swatch and a name, and the
legend covers no bar."""

from __future__ import annotations

from sonic.workflow.report import STAGE_LABELS, timing_figure, timing_plot

RUNS = {
    "direct": {"events": 600, "events_per_s": 410.0, "stages": {
        "io": 0.18, "inputs": 0.23, "infer_client": 1.07, "output": 0.006}},
    "service": {"events": 600, "events_per_s": 520.0, "stages": {
        "io": 0.28, "inputs": 0.22, "infer_client": 1.97, "output": 0.006}},
}  # fmt: skip


def test_the_stage_chart_names_every_stage_and_covers_no_bar() -> None:
    fig = timing_figure(RUNS)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        *STAGE_LABELS.values(), "wall time per event (stages may overlap)"]
    stages = legend.legend_handles[: len(STAGE_LABELS)]
    assert all(h.get_facecolor()[3] > 0 for h in stages)  # a swatch each
    fig.canvas.draw()
    box = legend.get_window_extent()
    axes = ax.get_window_extent()
    assert box.x0 >= axes.x1  # beside the axes, not over a bar
    totals = sorted(t.get_text() for t in ax.texts)
    assert totals == ["stages 2.48 ms", "stages 4.13 ms"]  # each bar's sum, ms per event
    # The async service run overlaps its stages: its wall time per event is below the sum.
    (lines,) = [c for c in ax.collections if c.get_label().startswith("wall")]
    walls = [round(float(seg[0][1]), 3) for seg in lines.get_segments()]
    assert walls == [round(1e3 / 410.0, 3), round(1e3 / 520.0, 3)]
    assert timing_plot(RUNS).startswith("iVBOR")  # a PNG
