# ruff: noqa: RUF001  (the tables are in the documentation's Greek and typographic signs)
"""The MET-performance tables of docs/workflow.md, from ``benchmarks/results/met_performance.json``.

``benchmarks/met_performance.py`` measures and prints its results bin by bin; this
script lays the same numbers out as the documentation shows them (estimators as
rows, q_T bins as columns), so that the page is pasted from the results, never
typed::

    .venv/bin/python benchmarks/met_performance_tables.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "met_performance.json"
#: The documentation's name of each estimator.
LABELS = {"PF (raw)": "raw PF", "DeepMET": "DeepMET, resolution tune",
          "DeepMET (response tune)": "DeepMET, response tune"}  # fmt: skip
#: Each process's title; a Z-plus-jet sample (``zmumu_highpt``, ...) is its process's.
TITLES = {"zmumu": "Z→μμ", "znunu": "Z→νν"}
#: The bins each table shows: (sample, bin's lower edge).
MAIN_BINS = (("zmumu", 0.0), ("zmumu", 50.0), ("znunu", 50.0), ("znunu", 100.0))
HIGHPT_BINS = (("znunu_highpt", 250.0), ("znunu_highpt", 350.0), ("zmumu_midpt", 50.0),
               ("zmumu_highpt", 100.0), ("zmumu_highpt", 150.0),
               ("zmumu_highpt", 250.0))  # fmt: skip


def _value(x: float, err: float, digits: int | None = None) -> str:
    digits = digits if digits is not None else (3 if err < 0.025 else 2)
    return f"{x:.{digits}f} ± {err:.{digits}f}"


def _edge(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:g}"


def bins_table(samples: dict[str, dict[str, list[dict[str, Any]]]],
               columns: tuple[tuple[str, float], ...]) -> str:  # fmt: skip
    """Response and sigma_perp/R per estimator (rows) in the chosen bins (columns)."""
    first = next(iter(samples.values()))
    estimators = list(first)
    cells: dict[str, list[str]] = {e: [] for e in estimators}
    header = ["estimator"]
    for sample, lo in columns:
        ref = next(b for b in samples[sample]["PF (raw)"] if b["lo"] == lo)
        title = TITLES[sample.split("_")[0]]
        header += [f"{title} {_edge(lo)}–{_edge(ref['hi'])} ({ref['events']:,}): R",
                   "σ⊥/R"]  # fmt: skip
        for e in estimators:
            b = next(b for b in samples[sample][e] if b["lo"] == lo)
            cells[e] += [_value(b["response"], b["response_err"]),
                         _value(b["sigma_perp"], b["sigma_perp_err"], 1)]  # fmt: skip
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows += [f"| {LABELS.get(e, e)} | " + " | ".join(c) + " |" for e, c in cells.items()]
    return "\n".join(rows)


def seeds_table(seeds: dict[str, dict[str, list[dict[str, Any]]]],
                digits: int | None = None) -> str:  # fmt: skip
    """One quantity (the response, sigma_perp/R) per estimator (rows) in each bin measured on
    several samples (columns): the samples' mean ± its error (seed_spread), then one sample's
    bootstrap error."""
    estimators = list(next(iter(seeds.values())))
    header, cells = ["estimator"], {e: [] for e in estimators}
    for sample, by_estimator in seeds.items():
        for i, ref in enumerate(by_estimator["PF (raw)"]):
            header.append(f"{TITLES[sample.split('_')[0]]} {_edge(ref['lo'])}–{_edge(ref['hi'])}")
            for e in estimators:
                b = by_estimator[e][i]
                cells[e].append(f"{_value(b['mean'], b['error'], digits)} "
                                f"({b['bootstrap_err']:.{digits or 3}f})")  # fmt: skip
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows += [f"| {LABELS.get(e, e)} | " + " | ".join(c) + " |" for e, c in cells.items()]
    return "\n".join(rows)


def pileup_table(scan: dict[str, dict[str, Any]]) -> str:
    pileups = next(iter(scan.values()))["pileup"]
    order = sorted(range(len(pileups)), key=pileups.__getitem__)
    rows = ["| estimator | " + " | ".join(f"pileup {pileups[i]:g}" if i == order[0] else
                                          f"{pileups[i]:g}" for i in order)
            + " | σ₀ | s per pileup collision |", "|---" * (len(pileups) + 3) + "|"]  # fmt: skip
    for e, r in scan.items():
        rows.append(f"| {LABELS.get(e, e)} | "
                    + " | ".join(_value(r["sigma_perp"][i], r["sigma_perp_err"][i], 1)
                                 for i in order)
                    + f" | {_value(r['sigma0'], r['sigma0_err'], 1)} | "
                    f"{_value(r['per_collision'], r['per_collision_err'], 2)} |")  # fmt: skip
    return "\n".join(rows)


def growth_table(growth: dict[str, dict[str, Any]]) -> str:
    """sigma_perp/R's growth over the pileup scan per estimator on each seed's samples, and its
    ratio to raw PF's (pileup_growth): per seed, then the mean ± its error."""
    rows = ["| estimator | growth per sample (GeV) | mean | ÷ raw PF's, per sample | mean |",
            "|---|---|---|---|---|"]  # fmt: skip
    for e, g in growth.items():
        rows.append(f"| {LABELS.get(e, e)} | " + " / ".join(f"{x:.1f}" for x in g["growth"])
                    + f" | {_value(g['growth_mean'], g['growth_error'], 1)} | "
                    + " / ".join(f"{x:.2f}" for x in g["vs_reference"])
                    + f" | {_value(g['vs_reference_mean'], g['vs_reference_error'], 2)} |")
    return "\n".join(rows)


def main() -> None:
    record = json.loads(RESULTS.read_text())
    print(bins_table(record["processes"], MAIN_BINS), end="\n\n")
    widths = ", ".join(f"{LABELS.get(e, e)} {w['std']:.1f}" for e, w in
                       record["qcd_widths"].items())  # fmt: skip
    print(f"QCD multijet (MET − GenMET, x and y together, GeV): {widths}.", end="\n\n")
    print(bins_table(record["highpt"], HIGHPT_BINS), end="\n\n")
    if "seeds" in record:
        print(seeds_table(record["seeds"]["response"]), end="\n\n")
        print(seeds_table(record["seeds"]["sigma_perp"], 1), end="\n\n")
    if "pileup_scan" in record:
        print(pileup_table(record["pileup_scan"]), end="\n\n")
    if "pileup_growth" in record:
        print(growth_table(record["pileup_growth"]), end="\n\n")
    truth = ", ".join(f"{LABELS.get(e, e)} {r['fit']['sigma_perp']:.1f} → "
                      f"{r['truth']['sigma_perp']:.1f}"
                      for e, r in record["truth_vertexing"].items())  # fmt: skip
    print(f"fromPV from the vertex fit → from the generator (σ⊥/R, GeV): {truth}.")


if __name__ == "__main__":
    main()
