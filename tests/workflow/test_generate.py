"""Pythia 8 samples: the NanoAOD-like schema, determinism, and the detector's classes."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from sonic.workflow.detector import Particles, reconstruct
from sonic.workflow.generate import EventGenerator, generate_sample
from sonic.workflow.inputs import PDGID_INDEX


def test_schema_is_nanoaod_like(samples: list[Path]) -> None:
    tree = uproot.open(samples[0])["Events"]
    assert tree.num_entries == 24
    keys = set(tree.keys())
    for b in ("run", "luminosityBlock", "event", "nPFCands", "GenMET_pt", "GenMET_phi",
              "RawPFMET_pt", "RawPFMET_phi", "PuppiMET_pt", "Pileup_nPU", "PV_z"):  # fmt: skip
        assert b in keys, b
    for f in ("pt", "eta", "phi", "mass", "d0", "dz", "puppiWeight", "pdgId", "charge", "fromPV"):
        assert f"PFCands_{f}" in keys
    a = tree.arrays()
    assert ak.all(ak.num(a.PFCands_pt) == a.nPFCands)
    assert a.event.tolist() == list(range(1, 25))
    assert set(np.unique(ak.flatten(a.PFCands_pdgId)).tolist()) <= set(PDGID_INDEX)
    assert set(np.unique(ak.flatten(a.PFCands_fromPV)).tolist()) <= {0, 1, 2, 3}
    assert ak.all(ak.flatten(a.PFCands_pt[:, :-1] >= a.PFCands_pt[:, 1:]))  # hardest first
    w = ak.flatten(a.PFCands_puppiWeight)
    assert ak.all((w >= 0) & (w <= 1))
    # Z->nunu (odd events) has real MET; the neutrinos give GenMET.
    assert np.median(a.GenMET_pt[a.GenProcess_id == 1]) > 30
    assert set(a.GenProcess_id.tolist()) == {0, 1}


def test_same_seed_same_events(tmp_path: Path) -> None:
    kw = {"processes": ["znunu"], "pileup": 3, "pool_size": 5}
    a = generate_sample(tmp_path / "a.root", 6, seed=5, **kw)
    b = generate_sample(tmp_path / "b.root", 6, seed=5, **kw)
    c = generate_sample(tmp_path / "c.root", 6, seed=6, **kw)
    ta, tb, tc = (uproot.open(p)["Events"].arrays() for p in (a, b, c))
    assert ak.all(ta.PFCands_pt == tb.PFCands_pt)
    assert ak.to_list(ta.GenMET_pt) == ak.to_list(tb.GenMET_pt)
    assert ak.to_list(ta.GenMET_pt) != ak.to_list(tc.GenMET_pt)


def test_pileup_is_poisson_around_the_mean() -> None:
    gen = EventGenerator(["znunu"], pileup=8, pool_size=10, seed=3)
    n_pu = [next(gen).n_pu for _ in range(30)]
    assert 5 < np.mean(n_pu) < 11 and np.std(n_pu) > 0


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown process 'wjets'"):
        EventGenerator(["wjets"])
    with pytest.raises(ValueError, match="pileup must be >= 0"):
        EventGenerator(["ttbar"], pileup=-1)
    with pytest.raises(ValueError, match="n_events must be >= 1"):
        generate_sample(tmp_path / "x.root", 0)


def _particles(pdg: list[int], charge: list[float], px: list[float], pz: list[float],
               vx: float = 0.0) -> Particles:  # fmt: skip
    n = len(pdg)
    z = np.zeros(n)
    return Particles(np.array(pdg, np.int32), np.array(charge, float), np.array(px, float), z,
                     np.array(pz, float), np.full(n, vx), z, z)  # fmt: skip


def test_detector_classes_and_vertex_association() -> None:
    rng = np.random.default_rng(0)
    # pi+, K- (a charged hadron, so -211), photon, neutron, neutrino, a forward pi0 photon.
    parts = _particles([211, -321, 22, 2112, 12, 22], [1, -1, 0, 0, 0, 0],
                       [20, 15, 30, 40, 50, 5], [0, 10, 0, 5, 0, 200])  # fmt: skip
    hard = reconstruct(parts, np.zeros(6, bool), np.zeros(6), rng)
    assert sorted(hard.pdgId.tolist()) == sorted([211, -211, 22, 130, 2])  # neutrino lost
    charged = hard.charge != 0
    assert (hard.fromPV[charged] == 3).all()  # hard-scatter tracks are in the PV fit
    assert (np.abs(hard.dz[charged]) < 0.05).all()
    # The same pion from a pileup collision 2 cm away: dz ~ 2 cm, fromPV 0, PUPPI weight 0.
    pu = reconstruct(parts, np.ones(6, bool), np.full(6, 2.0), np.random.default_rng(0))
    pion = pu.pdgId == 211
    assert pu.dz[pion][0] == pytest.approx(2.0, abs=0.05)
    assert pu.fromPV[pion][0] == 0 and pu.puppiWeight[pion][0] == 0.0
