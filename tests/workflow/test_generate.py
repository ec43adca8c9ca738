"""Pythia 8 samples: the NanoAOD-like schema, determinism, and the detector's classes."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from sonic.workflow import detector
from sonic.workflow.detector import Particles
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


def _hard(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, np.int64), np.zeros(1)


def test_detector_classes() -> None:
    rng = np.random.default_rng(0)
    # pi+, K- (a charged hadron, so -211), photon, neutron, neutrino, a forward pi0 photon;
    # each away from the others, so that no neutral falls into a track's cluster.
    parts = _particles([211, -321, 22, 2112, 12, 22], [1, -1, 0, 0, 0, 0],
                       [20, 15, -30, -40, 50, 5], [0, 10, 0, 25, 0, 200])  # fmt: skip
    # The two tracks alone cannot make a vertex (four are needed): no PV, so fromPV is 0.
    reco = detector.reconstruct(parts, *_hard(6), rng)
    assert sorted(reco.candidates.pdgId.tolist()) == sorted([211, -211, 22, 130, 2])
    assert reco.vertices.count == 0


def _tracks(n: int, z_mm: float, pt: float = 5.0) -> Particles:
    """n charged pions of ``pt`` GeV spread in phi, produced ``z_mm`` from their collision."""
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    z = np.full(n, z_mm / 10)
    return Particles(np.full(n, 211, np.int32), np.ones(n), pt * np.cos(phi), pt * np.sin(phi),
                     np.zeros(n), np.zeros(n), np.zeros(n), z)  # fmt: skip


def test_tracks_reach_the_calorimeters_only_above_the_looper_threshold(monkeypatch) -> None:
    """An untracked charged hadron is seen by the calorimeters as a neutral hadron, at the
    non-compensated response; below 0.7 GeV it curls up and is lost."""
    parts = _particles([211] * 400 + [-211] * 400, [1] * 400 + [-1] * 400,
                       [0.6] * 400 + [20.0] * 400, [0.0] * 800)  # fmt: skip
    reco = detector.reconstruct(parts, *_hard(800), np.random.default_rng(1)).candidates
    soft = reco.pt < 1.0
    assert (reco.charge[soft] != 0).all()  # no neutral below 1 GeV: the untracked soft ones left
    neutral = reco.charge == 0
    assert 0.03 < neutral.sum() / 400 < 0.2  # untracked (10%), minus clusters merged away
    assert np.mean(reco.pt[neutral]) < 20 * 0.9  # the hadron response is below 1


def test_tracking_efficiency_by_eta(monkeypatch) -> None:
    """Each region tracks hadrons at its own efficiency, as CMS measures it (0.93 in the
    barrel, 0.84 beyond |eta| 0.9 above 1 GeV); set to all and none, all and none."""
    n = 400
    eta = np.repeat([0.5, 1.5], n)
    pt = np.full(2 * n, 5.0)
    phi = np.tile(np.linspace(0, 2 * np.pi, n, endpoint=False), 2)
    parts = Particles(np.full(2 * n, 211, np.int32), np.ones(2 * n), pt * np.cos(phi),
                      pt * np.sin(phi), pt * np.sinh(eta), *np.zeros((3, 2 * n)))  # fmt: skip

    def tracked(rng_seed: int) -> tuple[int, int]:
        c = detector.reconstruct(parts, *_hard(2 * n), np.random.default_rng(rng_seed))
        track = c.candidates.charge != 0
        barrel = np.abs(c.candidates.eta) < detector.TRACKER_BARREL_ETA
        return int((track & barrel).sum()), int((track & ~barrel).sum())

    barrel, endcap = tracked(4)
    assert 0.89 * n < barrel < 0.97 * n and 0.79 * n < endcap < 0.89 * n
    monkeypatch.setattr(detector, "HADRON_TRACKING_EFFICIENCY", ((1.0, 1.0), (0.0, 0.0)))
    assert tracked(4) == (n, 0)


def test_hadron_response_rises_to_one() -> None:
    r = detector.hadron_response(np.array([1.0, 5.0, 20.0, 100.0, 1000.0]))
    assert (np.diff(r) > 0).all() and r[0] < 0.7 and 0.75 < r[3] < r[4] < 1


def test_forward_calorimeter_responds_less_to_hadrons() -> None:
    """100 GeV neutrons: about 0.79 of their energy in the central calorimeters (PF-calibrated
    but non-compensating), about 0.63 in HF (e/h about 5, uncalibrated); photons at 1 in HF too."""

    def mean_response(pdg: int, eta: float) -> float:
        pt = 100.0 / np.cosh(eta)
        parts = _particles([pdg] * 400, [0] * 400, [pt] * 400, [pt * np.sinh(eta)] * 400)
        c = detector.reconstruct(parts, *_hard(400), np.random.default_rng(3)).candidates
        return float(np.sum(c.pt * np.cosh(c.eta)) / (400 * 100.0))

    assert 0.75 < mean_response(2112, 0.0) < 0.83
    assert 0.58 < mean_response(2112, 4.0) < 0.68
    assert 0.97 < mean_response(22, 4.0) < 1.03


def test_particle_flow_merges_a_neutral_into_a_track_cluster() -> None:
    """A 3 GeV neutral hadron inside a 50 GeV pion's calorimeter cell is lost in its cluster
    (its energy is below the cluster's spread); 0.5 units of eta away it is its own candidate."""
    seen = {0.02: 0, 0.5: 0}
    for seed in range(40):
        for deta in seen:
            parts = _particles([211, 2112], [1, 0], [50.0, 3.0], [0.0, 3.0 * np.sinh(deta)])
            c = detector.reconstruct(parts, *_hard(2), np.random.default_rng(seed)).candidates
            seen[deta] += bool(((c.charge == 0) & (np.abs(c.eta - deta) < 0.01)).any())
    assert seen[0.02] <= 10 and seen[0.5] >= 30


def test_tracks_meet_the_ecal_turned_by_the_field() -> None:
    """A 1 GeV track at eta 0 has turned by arcsin(0.3 x 3.8 T x 1.29 m / 2 GeV) = 0.83 rad
    when it meets the ECAL barrel, clockwise for positive charge; a 0.5 GeV one curls up
    before it, but reaches the endcap at eta 2.5 (|z| 3.15 m: r 0.52 m)."""
    phi, reaches = detector.impact_phi(np.array([0.0, 0.0, 3.0, 0.0, 0.0]),
                                       np.array([1.0, 1.0, 1.0, 0.5, 0.5]),
                                       np.array([0.0, 0.0, 0.0, 0.0, 2.5]),
                                       np.array([1, -1, -1, 1, 1]), 1.29, 3.15)  # fmt: skip
    turn = np.arcsin(0.3 * 3.8 * 1.29 / 2)
    assert np.allclose(phi[:3], [-turn, turn, 3.0 + turn - 2 * np.pi])  # kept in (-pi, pi]
    assert reaches.tolist() == [True, True, True, False, True]
    assert np.isclose(phi[4], -np.arcsin(0.3 * 3.8 * 3.15 / np.sinh(2.5) / 2 / 0.5))


def test_particle_flow_turns_a_merged_photon_back_into_a_photon(monkeypatch) -> None:
    """A 10 GeV photon two crystals from a 50 GeV pion joins its block; what the block holds
    beyond the pion's expected deposit comes back as a photon first (PF's precedence), never
    above the photon's energy, and as a neutral hadron beyond it.  Made all a neutral hadron
    (sample version 5), no photon comes back; merged only within one crystal (also version 5),
    the photon is its own candidate at its full energy."""

    def neutrals() -> tuple[list[float], list[float]]:
        photons, hadrons = [], []
        deta = 2 * detector.ECAL_CELL
        for seed in range(40):
            parts = _particles([211, 22], [1, 0], [50.0, 0.0], [0.0, 0.0])
            parts.px[1], parts.pz[1] = 10.0 / np.cosh(deta), 10.0 * np.tanh(deta)
            c = detector.reconstruct(parts, *_hard(2), np.random.default_rng(seed)).candidates
            e = c.pt * np.cosh(c.eta)
            photons += e[c.pdgId == 22].tolist()
            hadrons += e[c.pdgId == 130].tolist()
        return photons, hadrons

    photons, hadrons = neutrals()
    assert 30 <= len(photons) < 40  # where the excess beats the pion's sigma
    assert max(photons) <= 10.0 * 1.05 and np.mean(photons) < 10.0 * 0.95  # partly lost
    monkeypatch.setattr(detector, "EXCESS_PHOTONS_FIRST", False)
    photons, more_hadrons = neutrals()
    assert len(photons) <= 6 and len(more_hadrons) > len(hadrons)  # photons: pion untracked
    monkeypatch.setattr(detector, "ECAL_LINK_CELLS", 1)
    photons, _ = neutrals()
    assert len(photons) == 40 and abs(np.mean(photons) - 10.0) < 0.2


def test_vertex_association_without_truth() -> None:
    """fromPV comes from the vertices the tracks make: a hard collision of 10 tracks, pileup 2
    cm away with 6 (NoPV), and pileup 0.5 mm away (merged into the PV)."""
    parts = Particles.concat([_tracks(10, 0.0, pt=20.0), _tracks(6, 0.0), _tracks(6, 0.0)])
    collision = np.repeat([0, 1, 2], [10, 6, 6])
    reco = detector.reconstruct(parts, collision, np.array([0.0, 2.0, 0.05]),
                                np.random.default_rng(0))  # fmt: skip
    c = reco.candidates
    assert reco.vertices.count == 2  # the near pileup merged into the PV
    assert reco.vertices.pv_z == pytest.approx(0.0, abs=0.003)
    far = np.abs(c.dz) > 1
    near = (c.charge != 0) & ~far  # (PF confusion may add neutrals, which have dz = 0)
    assert far.sum() == 6 and (c.fromPV[far] == 0).all() and c.isPU[far].all()
    # The merged vertex is fitted at the hard collision; the merged pileup's tracks are outside
    # its fit but closest to it: PVTight, which CHS and PUPPI keep alike.
    assert (c.fromPV[near & ~c.isPU] == 3).all() and (c.fromPV[near & c.isPU] == 2).all()
    assert c.isPU[near].any() and not c.isPU[near].all()
    assert (c.puppiWeight[far] == 0).all() and (c.puppiWeight[near] == 1).all()
