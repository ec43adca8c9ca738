"""Jet clustering against FastJet run directly, one event at a time, on generated events."""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import fastjet
import numpy as np
import pytest
import uproot

from sonic.workflow.jets import AK4, AK8, JetSpec, cluster

FIELDS = ("pt", "eta", "phi", "mass", "charge", "fromPV", "puppiWeight")


def _candidates(path: Path) -> dict[str, ak.Array]:
    with uproot.open(path) as f:
        arrays = f["Events"].arrays([f"PFCands_{k}" for k in FIELDS], library="ak", how=dict)
    return {k: arrays[f"PFCands_{k}"] for k in FIELDS}


def _direct(event: dict[str, np.ndarray], spec: JetSpec) -> list[tuple[float, list[int]]]:
    """(pt, sorted constituent indices) of each jet, from PseudoJets built one by one."""
    pseudo = []
    for i in range(len(event["pt"])):
        if spec.inputs == "chs" and event["charge"][i] != 0 and event["fromPV"][i] == 0:
            continue
        w = 1.0 if spec.inputs == "chs" else float(event["puppiWeight"][i])
        if w <= 0:
            continue
        pt, eta, phi, m = (float(event[k][i]) for k in ("pt", "eta", "phi", "mass"))
        mt = math.sqrt(pt * pt + m * m)
        pj = fastjet.PseudoJet(w * pt * math.cos(phi), w * pt * math.sin(phi),
                               w * pt * math.sinh(eta), w * mt * math.cosh(eta))  # fmt: skip
        pj.set_user_index(i)
        pseudo.append(pj)
    seq = fastjet.ClusterSequence(pseudo, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                 spec.radius))  # fmt: skip
    jets = fastjet.sorted_by_pt(seq.inclusive_jets(spec.min_pt))
    return [(j.pt(), sorted(c.user_index() for c in j.constituents()))
            for j in jets if abs(j.eta()) < spec.max_abs_eta]  # fmt: skip


@pytest.mark.parametrize("spec", [AK4, AK8, JetSpec("ak8-low", 0.8, "puppi", 20.0, 2.4)],
                         ids=lambda s: s.name)  # fmt: skip
def test_clustering_equals_fastjet_run_directly(samples: list[Path], spec: JetSpec) -> None:
    cands = _candidates(samples[0])
    jets = cluster(cands, spec)
    n_jets = 0
    for ev in range(len(cands["pt"])):
        event = {k: ak.to_numpy(cands[k][ev]) for k in FIELDS}
        expected = _direct(event, spec)
        got_pt = ak.to_numpy(jets.pt[ev])
        assert len(got_pt) == len(expected), f"event {ev}"
        assert np.all(np.diff(got_pt) <= 0), "jets come sorted by pT"
        for j, (pt, members) in enumerate(expected):
            assert got_pt[j] == pytest.approx(pt, rel=1e-6)  # float32 inputs
            constituents = ak.to_list(jets.constituents[ev][j])
            assert sorted(constituents) == members
            weight = event["puppiWeight"] if spec.inputs == "puppi" else 1.0
            by_pt = (event["pt"] * weight)[constituents]
            assert np.all(np.diff(by_pt) <= 0), "constituents come by the pT the jet saw"
        n_jets += len(expected)
    assert n_jets > 0, "the sample must give this collection some jets to compare"


def test_chs_drops_charged_pileup_and_puppi_scales() -> None:
    """Two hand-built events: a charged pileup track never enters an AK4 jet; an AK8 jet of
    half-weighted candidates has half their pT."""
    ev = {"pt": [[40.0, 30.0, 20.0]], "eta": [[0.1, 0.2, 0.15]], "phi": [[0.0, 0.1, 0.05]],
          "mass": [[0.0, 0.0, 0.0]], "charge": [[1, -1, 0]], "fromPV": [[3, 0, 3]],
          "puppiWeight": [[0.5, 0.5, 0.5]]}  # fmt: skip
    cands = {k: ak.Array(v) for k, v in ev.items()}
    ak4 = cluster(cands, AK4)
    assert ak.to_list(ak4.constituents) == [[[0, 2]]]
    assert ak4.pt[0][0] == pytest.approx(60.0, rel=2e-3)
    ak8 = cluster(cands, JetSpec("t", 0.8, "puppi", 10.0, 2.4))
    assert ak.to_list(ak8.constituents) == [[[0, 1, 2]]]
    assert ak8.pt[0][0] == pytest.approx(45.0, rel=2e-3)


def test_an_event_without_jets() -> None:
    cands = {k: ak.Array([[], [5.0]]) for k in ("pt", "eta", "phi", "mass", "puppiWeight")}
    cands |= {"charge": ak.Array([[], [0]]), "fromPV": ak.Array([[], [3]])}
    jets = cluster(cands, AK4)
    assert list(jets.counts()) == [0, 0]
