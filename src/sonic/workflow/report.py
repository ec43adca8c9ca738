"""MET resolution, plots and the self-contained HTML report of a workflow run.

Resolution is the width of the difference from GenMET in each transverse
component: the standard deviation, and the robust half-width of the central
68% interval (``sigma68``), which tails do not dominate.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sonic.plots import png, pyplot
from sonic.workflow.met_performance import ESTIMATORS as MET_ESTIMATORS

#: Estimators in a workflow output: (label, pt column, phi column); CHS needs the candidates.
ESTIMATORS = tuple((label, *cols) for label, cols in MET_ESTIMATORS.items() if cols)


def _xy(pt: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pt * np.cos(phi), pt * np.sin(phi)


def sigma68(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [16, 84])
    return float(hi - lo) / 2


def resolution(table: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per estimator: std and sigma68 of (MET - GenMET) in x and y, in GeV."""
    gx, gy = _xy(np.asarray(table["GenMET_pt"], float), np.asarray(table["GenMET_phi"], float))
    out: dict[str, dict[str, float]] = {}
    for label, pt, phi in ESTIMATORS:
        if pt not in table:
            continue
        x, y = _xy(np.asarray(table[pt], float), np.asarray(table[phi], float))
        dx, dy = x - gx, y - gy
        out[label] = {"std_x": float(np.std(dx)), "std_y": float(np.std(dy)),
                      "sigma68_x": sigma68(dx), "sigma68_y": sigma68(dy),
                      "events": len(dx)}  # fmt: skip
    return out


def read_outputs(paths: list[str] | list[Path]) -> dict[str, Any]:
    """Concatenate workflow outputs (Parquet or ROOT) into columns: numpy arrays for per-event
    values, awkward records for collections (``Jet``, from NanoAOD's ``nJet`` and ``Jet_*``
    branches in ROOT)."""
    import awkward as ak

    parts: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if p.suffix == ".parquet":
            table = ak.from_parquet(p)
            parts.append({k: table[k] for k in table.fields})
            continue
        import uproot

        arrays = uproot.open(p)["Events"].arrays(library="ak", how=dict)
        nested = {k[1:] for k in arrays
                  if k.startswith("n") and any(b.startswith(f"{k[1:]}_") for b in arrays)}
        part = {k: v for k, v in arrays.items()
                if k[1:] not in nested and k.split("_")[0] not in nested}  # fmt: skip
        for name in nested:
            fields = {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(f"{name}_")}
            part[name] = ak.zip(fields)
        parts.append(part)
    merged = {k: ak.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {k: v if v.ndim > 1 or v.fields else ak.to_numpy(v) for k, v in merged.items()}


def resolution_plot(table: Mapping[str, np.ndarray]) -> str:
    """Histograms of MET - GenMET in x and y for each estimator; base64 PNG."""
    plt = pyplot()
    res = resolution(table)
    gx, gy = _xy(np.asarray(table["GenMET_pt"], float), np.asarray(table["GenMET_phi"], float))
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    bins = np.linspace(-100, 100, 51)
    for ax, comp, g in ((axes[0], "x", gx), (axes[1], "y", gy)):
        for label, pt, phi in ESTIMATORS:
            if pt not in table:
                continue
            x, y = _xy(np.asarray(table[pt], float), np.asarray(table[phi], float))
            d = (x if comp == "x" else y) - g
            s = res[label][f"sigma68_{comp}"]
            ax.hist(np.clip(d, bins[0], bins[-1]), bins=bins, histtype="step", linewidth=2,
                    label=f"{label}: $\\sigma_{{68}}$ = {s:.1f} GeV")  # fmt: skip
        ax.set_xlabel(f"$p_{{{comp}}}^{{miss}} - p_{{{comp}}}^{{miss,gen}}$ [GeV]")
        ax.set_ylabel("events")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.45)  # room above the peaks for the legend
        ax.legend(fontsize=14, loc="upper right")
    fig.suptitle(f"MET resolution, {len(gx)} events")
    return png(fig)


#: The job's stages as the timing chart names them, in the order they stack.
STAGE_LABELS = {"io": "read events (ROOT)", "inputs": "build inputs",
                "infer_client": "inference, as the job waits for it", "output": "write outputs"}


def timing_plot(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """:func:`timing_figure` as base64 PNG."""
    return png(timing_figure(runs))


def timing_figure(runs: Mapping[str, Mapping[str, Any]]) -> Any:
    """Stacked bars: time per event of each stage, per run (ms/event), each bar's total on
    top; the legend beside the axes, so that it covers no bar."""
    plt = pyplot()
    names = list(runs)
    fig, ax = plt.subplots(figsize=(max(12, 3.2 * len(names)), 6))
    ticks = [n.replace(", ", "\n") for n in names]  # "task, mode" on two lines: no overlap
    bottom = np.zeros(len(names))
    for stage, label in STAGE_LABELS.items():
        v = np.array([runs[n]["stages"][stage] / max(runs[n]["events"], 1) * 1e3 for n in names])
        ax.bar(ticks, v, bottom=bottom, label=label, edgecolor="black", linewidth=0.5)
        bottom += v
    # Wall time per event: below the stacked sum where stages overlap (the async client reads
    # and builds the next chunk while a request is in flight), so the chart says so.
    timed = [(x, 1e3 / runs[n]["events_per_s"]) for x, n in enumerate(names)
             if runs[n].get("events_per_s")]  # fmt: skip
    if timed:
        xs, walls = np.array(timed).T
        ax.hlines(walls, xs - 0.42, xs + 0.42, colors="black", linestyles="dashed", linewidth=2,
                  label="wall time per event (stages may overlap)")  # fmt: skip
    top = bottom.copy()
    for x, wall in timed:
        top[x] = max(top[x], wall)
    for x, total in enumerate(bottom):  # above the bar and its wall-time line
        ax.annotate(f"stages {total:.2f} ms", (x, top[x]), ha="center", va="bottom",
                    fontsize=14, xytext=(0, 4), textcoords="offset points")  # fmt: skip
    ax.set_ylim(top=top.max() * 1.18)
    ax.set_ylabel("ms per event")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("wall"))  # bars first
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=14,
              loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # fmt: skip
    return fig


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
               signal: str = "b") -> Any:  # fmt: skip
    """Mistag rate against signal (b-jet, top-jet) efficiency (log scale): one curve per entry,
    (efficiency, mistag rate, line style); runs that agree overlap, so give them different
    styles."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 7))
    for name, (eff, mistag, style) in curves.items():
        keep = mistag > 0
        ax.plot(eff[keep], mistag[keep], style, linewidth=2, label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel(f"{signal}-jet efficiency")
    ax.set_ylabel("mistag rate")
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(fontsize=14, loc="upper left")
    return fig


def estimator_style(index: int, name: str) -> dict[str, Any]:
    """The colour, marker and line of the ``index``-th MET estimator in every MET plot: ten
    distinct colours (the style's own cycle repeats after six), and CMS's models, which no one
    here trained, dashed with squares."""
    reference = name.startswith("CMS")
    colors = pyplot().get_cmap("tab10").colors
    return {"color": colors[index % len(colors)], "marker": "s" if reference else "o",
            "linestyle": "--" if reference else "-"}  # fmt: skip


def recoil_figure(results: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    """Response and response-corrected resolutions against q_T, one line per estimator:
    ``results`` maps an estimator to its bins (sonic.workflow.met_performance.BinResult)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(24, 7))
    panels = (("response", "response R"), ("sigma_par", r"$\sigma_\parallel$ / R [GeV]"),
              ("sigma_perp", r"$\sigma_\perp$ / R [GeV]"))  # fmt: skip
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for i, (name, bins) in enumerate(results.items()):
            ax.errorbar([b.qt for b in bins], [getattr(b, key) for b in bins],
                        yerr=[getattr(b, f"{key}_err") for b in bins], capsize=3, label=name,
                        **estimator_style(i, name))  # fmt: skip
        ax.set_xlabel(r"$q_T$ [GeV]")
        ax.set_ylabel(ylabel)
    axes[0].axhline(1.0, color="black", linestyle=":", linewidth=1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=14, frameon=False)
    fig.suptitle(title)
    fig.subplots_adjust(bottom=0.30 if len(results) > 4 else 0.22)
    return fig
