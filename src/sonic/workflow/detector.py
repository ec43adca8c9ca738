"""A parametric CMS particle-flow response: generator particles in, PF candidates out.

This stands in for GEANT plus CMS reconstruction, with numbers of the size the
CMS detector papers quote; it is meant to give DeepMET and PF MET realistic
ingredients (tracking that removes charged pileup, calorimeters that smear
neutrals), not to reproduce CMS to the percent.  Per particle, in this order:

Acceptance and identification
    Neutrinos are dropped.  Charged particles with |eta| < 2.5 and pT > 0.3 GeV
    are tracked with efficiency 0.98 (muons, electrons), 0.93 (hadrons above
    1 GeV) or 0.83 (hadrons below; the tracker's material stops some) for
    |eta| < 0.9, 0.84 and 0.75 beyond, as CMS measures it.
    Tracked charged hadrons become ``+-211``, electrons ``+-11`` and muons
    ``+-13``.  An untracked charged particle is seen by the calorimeters as a
    neutral, unless it is below 0.7 GeV: it curls up in the 3.8 T field
    (a looper) and is lost.  Neutrals: photons and electrons give ``22`` and
    hadrons ``130`` for |eta| < 3; in the forward calorimeter (3 < |eta| < 5)
    EM particles give ``2`` and hadrons ``1``.  Untracked muons and anything
    beyond |eta| = 5 are lost.
Energy and momentum
    Tracks: sigma(pT)/pT = 1% (+) 0.015% x pT.  Photons and electrons in the
    ECAL: sigma(E)/E = 3%/sqrt(E) (+) 0.5%.  Hadrons in the calorimeters
    respond below 1 at low energy (non-compensation, :func:`hadron_response`:
    0.55 at 1 GeV, 0.73 at 20, 0.86 at 1 TeV) with 100%/sqrt(E) (+) 5%.  The
    forward calorimeter (HF) sees only Cherenkov light, mostly from the EM part of
    a shower (e/h about 5), and PF leaves its hadron clusters uncalibrated
    (``calibHF_use = False``): hadrons respond at 0.46 at 10 GeV and 0.63 at
    100 GeV, smeared by 180%/sqrt(E) (+) 10%.  So soft pileup in HF no longer
    balances the pileup the tracker sees, as in CMS, where removing charged
    pileup (CHS) therefore helps MET.  Thresholds: photons
    0.5 GeV, neutral hadrons 1 GeV, forward 10 GeV.  Masses are those PF assigns
    (pion mass for charged hadrons, 0 for neutrals).
Particle-flow confusion
    A tracked hadron's PF block swallows the photons within three ECAL crystals
    and the neutral hadrons within one HCAL tower of it; PF keeps only the
    block's excess over what the track predicts, beyond one standard deviation,
    as a photon as far as the merged photons' energy goes and a neutral hadron
    beyond.  So neutrals near tracks are partly lost, and an upward fluctuation
    of a charged hadron's own shower becomes a fake neutral (:func:`_link_clusters`).
Impact parameters
    From each particle's production point (Pythia's vertex plus its
    collision's z in the beam spot, sigma_z = 3.5 cm), straight-line
    approximation, smeared by sigma(d0) = 20 um (+) 100 um/pT and
    sigma(dz) = 30 um (+) 150 um/pT; dz against the reconstructed primary
    vertex.  Neutrals have d0 = dz = 0.
fromPV and PUPPI
    From the vertices the tracks make, without truth
    (:mod:`sonic.workflow.primary_vertex`); neutrals have fromPV 3.  PUPPI
    weights as CMS computes them (:mod:`sonic.workflow.puppi`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sonic.workflow.primary_vertex import (
    MAX_D0_SIGNIFICANCE,
    PV_USED_IN_FIT,
    Vertices,
    associate,
    find_vertices,
)
from sonic.workflow.puppi import puppi_weights

#: Beam-spot length in z (cm): where collisions, hard or pileup, happen.
BEAM_SPOT_SIGMA_Z = 3.5
NEUTRINOS = (12, 14, 16)
CHARGED_HADRON_MASS = 0.13957
LEPTON_MASS = {11: 0.000511, 13: 0.10566}
#: Charged particles below this pT (GeV) curl up in CMS's 3.8 T field before the calorimeters.
LOOPER_PT = 0.7
#: Tracking efficiency: muons and electrons; hadrons (above, below 1 GeV) in the barrel
#: (|eta| < :data:`TRACKER_BARREL_ETA`) and beyond, as CMS measures it falling from the barrel
#: to the endcaps (CMS-TRK-11-001: 94% for |eta| < 0.9, 85% above, prompt charged particles
#: above 0.9 GeV in ttbar): nuclear interactions in the tracker's material stop hadrons, soft
#: ones more.  Sample version 5 and before: 0.90 and 0.80 at every |eta|.
LEPTON_TRACKING_EFFICIENCY = 0.98
HADRON_TRACKING_EFFICIENCY = ((0.93, 0.83), (0.84, 0.75))
TRACKER_BARREL_ETA = 0.9
#: The hadron calorimeter's non-compensation after PF's calibration: the h/e and the exponent
#: of Groom's pi/e = 1 - (1 - h/e) (E / 1 GeV)^(m - 1).
H_OVER_E = 0.55
HADRON_M = 0.83
#: The forward calorimeter's h/e (e/h about 5: quartz fibres see Cherenkov light), which PF
#: does not calibrate away.
HF_H_OVER_E = 0.2
#: Calorimeter cell sizes (dR): ECAL crystals and HCAL towers in the barrel.
ECAL_CELL, HCAL_CELL = 0.0174, 0.087
#: How many cells from a track a neutral still joins the track's PF block: a neutral hadron
#: within one HCAL tower; a photon within three ECAL crystals.  PF links a track to every
#: cluster whose area, enlarged by up to a cell each way, holds the track's impact
#: (CMS-PRF-14-001, the link algorithm), and a photon's topological cluster spans about a
#: crystal each way of its own impact (the Moliere radius is a crystal; cells above twice the
#: noise join), so one crystal away from the edge of that area is three from its centre.
#: Sample version 5 and before merged photons within one crystal only.
ECAL_LINK_CELLS, HCAL_LINK_CELLS = 3, 1
#: PF turns a block's calorimeter excess over its tracks into a photon first, as far as the
#: block's ECAL energy goes, and a neutral hadron only from what is left (CMS-PRF-14-001:
#: "precedence is given to photons"); version 5 and before made it all a neutral hadron.
EXCESS_PHOTONS_FIRST = True
#: Tracks bend in CMS's solenoid (tesla) on their way to the calorimeters, whose faces are
#: at these radii and endcap |z| (m): ECAL barrel 1.29 and endcaps 3.15 (crystal fronts),
#: HCAL 1.77 and 3.88.  A track's cluster is where it meets them (:func:`impact_phi`);
#: sample version 5 and before put it along the track's direction at the vertex.
B_FIELD = 3.8
CALORIMETER_FACES = {"ecal": (1.29, 3.15), "hcal": (1.77, 3.88)}
TRACKS_BEND = True
#: PF makes no photon below this energy (GeV).
PHOTON_THRESHOLD = 0.5
#: PF makes no neutral hadron below this energy (GeV).
NEUTRAL_HADRON_THRESHOLD = 1.0


@dataclass(slots=True)
class Particles:
    """Final-state generator particles of one collision, as columns (GeV, cm)."""

    pdg: np.ndarray  # int32
    charge: np.ndarray  # float64 (Pythia's charge, e.g. 2/3 never appears in final states)
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    vx: np.ndarray  # production point relative to the collision point
    vy: np.ndarray
    vz: np.ndarray

    @classmethod
    def concat(cls, parts: list[Particles]) -> Particles:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__slots__))

    def rotated(self, dphi: float) -> Particles:
        """The same collision turned by dphi about the beam (pileup reuse)."""
        c, s = math.cos(dphi), math.sin(dphi)
        px, py = c * self.px - s * self.py, s * self.px + c * self.py
        vx, vy = c * self.vx - s * self.vy, s * self.vx + c * self.vy
        return Particles(self.pdg, self.charge, px, py, self.pz, vx, vy, self.vz)


@dataclass(slots=True)
class Candidates:
    """PF candidates of one event, as the NanoAOD ``PFCands_*`` columns."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    pdgId: np.ndarray
    charge: np.ndarray
    d0: np.ndarray
    dz: np.ndarray
    fromPV: np.ndarray
    puppiWeight: np.ndarray
    #: Truth, for diagnostics and labels: the candidate comes from a pileup collision.
    isPU: np.ndarray

    def sorted_by_pt(self) -> Candidates:
        order = np.argsort(-self.pt, kind="stable")
        return Candidates(*(getattr(self, f)[order] for f in self.__slots__))

    @property
    def px(self) -> np.ndarray:
        return self.pt * np.cos(self.phi)

    @property
    def py(self) -> np.ndarray:
        return self.pt * np.sin(self.phi)


def _quad(*terms: np.ndarray | float) -> np.ndarray:
    return np.sqrt(sum(np.square(t) for t in terms))


def sigma_d0(pt: np.ndarray) -> np.ndarray:
    """Transverse impact-parameter resolution (cm) of a track of ``pt`` GeV."""
    return _quad(0.002, 0.010 / np.maximum(pt, 0.1))


def sigma_dz(pt: np.ndarray) -> np.ndarray:
    """Longitudinal impact-parameter resolution (cm) of a track of ``pt`` GeV."""
    return _quad(0.003, 0.015 / np.maximum(pt, 0.1))


def hadron_response(e: np.ndarray, h_over_e: float | np.ndarray = H_OVER_E) -> np.ndarray:
    """Mean calorimeter response to a hadron of energy ``e`` GeV, relative to an electron's
    (Groom's pi/e = 1 - (1 - h/e) (E / 1 GeV)^(m - 1)): below 1, rising with energy."""
    return 1.0 - (1.0 - h_over_e) * np.power(np.maximum(e, 0.1), HADRON_M - 1.0)


def sigma_hadron(e: np.ndarray) -> np.ndarray:
    """Relative energy resolution of a hadron in the barrel and endcap calorimeters."""
    return _quad(1.0 / np.sqrt(np.maximum(e, 0.1)), 0.05)


@dataclass(frozen=True, slots=True)
class Reconstruction:
    """One event: its PF candidates (hardest first) and the vertices found."""

    candidates: Candidates
    vertices: Vertices


def reconstruct(parts: Particles, collision: np.ndarray, collision_z: np.ndarray,
                rng: np.random.Generator, truth_vertexing: bool = False,
                ) -> Reconstruction:  # fmt: skip
    """PF candidates from all particles of an event (hard scatter plus pileup).

    ``collision`` is each particle's collision (0: the hard scatter, >0: pileup) and
    ``collision_z`` each collision's z (cm).  ``truth_vertexing`` gives fromPV from the
    generator instead (3 for the hard scatter's tracks, 0 for pileup's): a diagnostic of what
    the vertex fit's confusion costs.
    """
    apdg = np.abs(parts.pdg)
    pt_true = np.hypot(parts.px, parts.py)
    visible = ~np.isin(apdg, NEUTRINOS) & (pt_true > 1e-6)
    p = np.sqrt(pt_true**2 + parts.pz**2)
    eta = np.arcsinh(np.divide(parts.pz, pt_true, out=np.zeros_like(p), where=pt_true > 0))
    phi = np.arctan2(parts.py, parts.px)
    aeta = np.abs(eta)
    charged = parts.charge != 0
    lepton_id = np.isin(apdg, (11, 13))
    n = len(apdg)

    barrel = aeta < TRACKER_BARREL_ETA
    (hard_b, soft_b), (hard_e, soft_e) = HADRON_TRACKING_EFFICIENCY
    hard, soft = np.where(barrel, hard_b, hard_e), np.where(barrel, soft_b, soft_e)
    eff = np.where(lepton_id, LEPTON_TRACKING_EFFICIENCY, np.where(pt_true > 1.0, hard, soft))
    tracked = visible & charged & (aeta < 2.5) & (pt_true > 0.3) & (rng.random(n) < eff)
    looper = charged & ~tracked & (pt_true < LOOPER_PT) & (aeta < 3.0)
    em = (apdg == 22) | (apdg == 11)
    calo = visible & ~tracked & ~looper & (apdg != 13) & (aeta < 5.0)
    forward = calo & (aeta >= 3.0)

    # Energy scale per particle (direction kept): the mean response times the smearing.
    response, sigma = np.ones(n), np.zeros(n)
    sigma[tracked] = _quad(0.01, 1.5e-4 * pt_true[tracked])
    sel = calo & ~forward & em
    sigma[sel] = _quad(0.03 / np.sqrt(p[sel]), 0.005)
    sel = calo & ~em
    response[sel] = hadron_response(p[sel], np.where(forward[sel], HF_H_OVER_E, H_OVER_E))
    sigma[sel] = np.where(forward[sel], _quad(1.8 / np.sqrt(p[sel]), 0.10), sigma_hadron(p[sel]))
    sel = forward & em
    sigma[sel] = _quad(1.8 / np.sqrt(p[sel]), 0.10)
    scale = np.clip(response * (1.0 + sigma * rng.standard_normal(n)), 0.0, None)
    pt, e_reco = pt_true * scale, p * scale
    threshold = np.where(forward, 10.0, np.where(em, PHOTON_THRESHOLD, NEUTRAL_HADRON_THRESHOLD))
    keep = tracked | (calo & (e_reco > threshold))

    pdg = np.zeros(n, dtype=np.int32)
    sign = np.sign(parts.charge).astype(np.int32)
    lep = tracked & lepton_id
    pdg[lep] = parts.pdg[lep]
    pdg[calo & ~forward] = np.where(em[calo & ~forward], 22, 130)
    pdg[forward] = np.where(em[forward], 2, 1)
    pdg[tracked & ~lep] = sign[tracked & ~lep] * 211  # pi+ is +211 with charge +1
    charge = np.where(tracked, sign, 0).astype(np.int32)
    mass = np.where(tracked, CHARGED_HADRON_MASS, 0.0)
    for lepton, m in LEPTON_MASS.items():
        mass[tracked & (apdg == lepton)] = m

    # Particle-flow confusion (merged neutrals are lost, block excesses become neutrals).
    merged_away, source, excess, excess_pdg, excess_phi = _link_clusters(
        e_reco, p, pt_true, eta, phi, sign, tracked & ~lep, keep & calo & ~forward, em, rng
    )
    keep &= ~merged_away

    # Impact parameters: straight lines from the production point, against the collision.
    ux, uy = parts.px / np.maximum(pt_true, 1e-9), parts.py / np.maximum(pt_true, 1e-9)
    d0_true = -parts.vx * uy + parts.vy * ux
    z0_true = collision_z[collision] + parts.vz - (parts.vx * ux + parts.vy * uy) * parts.pz / \
        np.maximum(pt_true, 1e-9)  # fmt: skip
    sig_d0, sig_dz = sigma_d0(pt), sigma_dz(pt)
    d0 = np.where(tracked, d0_true + sig_d0 * rng.standard_normal(n), 0.0)
    z0 = z0_true + sig_dz * rng.standard_normal(n)

    # Vertices from the tracks alone; fromPV from them (neutrals: 3, as in MiniAOD).
    t = tracked
    prompt = np.abs(d0[t]) < MAX_D0_SIGNIFICANCE * sig_d0[t]
    vertices = find_vertices(z0[t], sig_dz[t], pt[t], eta[t], phi[t], prompt, collision[t])
    from_pv = np.full(n, PV_USED_IN_FIT, dtype=np.int32)
    from_pv[t] = associate(z0[t], sig_dz[t], prompt, lep[t], vertices)
    if truth_vertexing:
        from_pv[t] = np.where(collision[t] == 0, PV_USED_IN_FIT, 0)
    dz = np.where(tracked, z0 - vertices.pv_z, 0.0)

    # Each block excess joins as a photon or neutral hadron where its track met the ECAL.
    rows = np.concatenate([np.flatnonzero(keep), source])
    extra = np.arange(len(rows)) >= int(keep.sum())
    cols = {"pt": pt, "eta": eta, "phi": phi, "mass": mass, "pdgId": pdg, "charge": charge,
            "d0": d0, "dz": dz, "fromPV": from_pv}  # fmt: skip
    cols = {k: v[rows] for k, v in cols.items()}
    for k, v in {"pt": excess / np.cosh(eta[source]), "phi": excess_phi, "mass": 0.0,
                 "pdgId": excess_pdg, "charge": 0, "d0": 0.0, "dz": 0.0,
                 "fromPV": PV_USED_IN_FIT}.items():  # fmt: skip
        cols[k][extra] = v
    cols["puppiWeight"] = puppi_weights(cols["pt"], cols["eta"], cols["phi"], cols["charge"],
                                        cols["fromPV"], cols["dz"], vertices.count)  # fmt: skip
    cols["isPU"] = collision[rows] > 0
    return Reconstruction(Candidates(**cols).sorted_by_pt(), vertices)


def impact_phi(
    phi: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    charge: np.ndarray,
    radius: float,
    face_z: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Where tracks meet a calorimeter: (their phi there, whether they get there at all).

    In a field B along the beam a track of transverse momentum pT (GeV) is a helix of radius
    pT / (0.3 B) m; at transverse distance r from the beam it has turned by
    arcsin(0.3 B r / 2 pT), clockwise for positive charge seen from +z.  The calorimeter's
    face is the barrel at ``radius`` or an endcap at ``|z| = face_z`` (m), whichever the track
    meets first; eta is kept (the helix keeps its polar angle).  A track too soft to reach r
    curls up before it (the origin of :data:`LOOPER_PT`)."""
    r = np.minimum(radius, face_z / np.maximum(np.abs(np.sinh(eta)), 1e-9))
    turn = 0.5 * 0.3 * B_FIELD * r / np.maximum(pt, 1e-9)
    bent = phi - charge * np.arcsin(np.clip(turn, 0.0, 1.0))
    return (bent + math.pi) % (2 * math.pi) - math.pi, turn < 1.0


def _link_clusters(e_reco: np.ndarray, p: np.ndarray, pt: np.ndarray, eta: np.ndarray,
                   phi: np.ndarray, charge: np.ndarray, track: np.ndarray,
                   neutral: np.ndarray, em: np.ndarray, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, ...]:  # fmt: skip
    """PF's link of tracks and calorimeter clusters: (the neutrals merged away, and for each
    neutral PF makes from a block's excess: the track it came with, its energy, its pdgId
    and its phi).

    A tracked hadron that reaches the ECAL deposits hadron_response(p) p, smeared, in the
    calorimeters, where it meets them (:func:`impact_phi`; straight from the vertex where
    :data:`TRACKS_BEND` is off).  A photon within :data:`ECAL_LINK_CELLS` crystals of its
    ECAL impact, or a neutral hadron within :data:`HCAL_LINK_CELLS` towers of its HCAL
    impact, falls into the track's block and is no candidate of its own.  PF expects the
    track's deposit: if the block exceeds it by more than one standard deviation, the excess
    becomes a photon up to the merged photons' energy (the block's ECAL energy; the hadron's
    own ECAL share is not modelled) and a neutral hadron beyond, each above its threshold,
    at the ECAL impact; a fake neutral hadron where nothing merged.
    """
    from scipy.spatial import cKDTree

    tracks, neutrals = np.flatnonzero(track), np.flatnonzero(neutral)
    merged_away = np.zeros(len(p), bool)
    if TRACKS_BEND:
        ecal_phi, reaches = impact_phi(phi[tracks], pt[tracks], eta[tracks], charge[tracks],
                                       *CALORIMETER_FACES["ecal"])  # fmt: skip
        tracks, ecal_phi = tracks[reaches], ecal_phi[reaches]  # loopers make no cluster
        hcal_phi, _ = impact_phi(phi[tracks], pt[tracks], eta[tracks], charge[tracks],
                                 *CALORIMETER_FACES["hcal"])  # fmt: skip
    else:
        ecal_phi = hcal_phi = phi[tracks]
    expected = hadron_response(p[tracks]) * p[tracks]
    sigma = sigma_hadron(p[tracks]) * expected
    cluster = np.clip(expected + sigma * rng.standard_normal(len(tracks)), 0.0, None)
    ecal = np.zeros(len(tracks))
    for t_phi, is_em, reach in ((ecal_phi, True, ECAL_LINK_CELLS * ECAL_CELL),
                                (hcal_phi, False, HCAL_LINK_CELLS * HCAL_CELL)):  # fmt: skip
        these = neutrals[em[neutrals] == is_em]
        if not len(these) or not len(tracks):
            continue
        # Each neutral joins the nearest track within its reach (phi periodic via copies).
        t_pts = np.column_stack([np.tile(eta[tracks], 3),
                                 np.concatenate([t_phi + s for s in
                                                 (-2 * math.pi, 0.0, 2 * math.pi)])])  # fmt: skip
        dist, idx = cKDTree(t_pts).query(np.column_stack([eta[these], phi[these]]))
        joins = dist < reach
        owner = idx[joins] % len(tracks)
        np.add.at(cluster, owner, e_reco[these[joins]])
        if is_em:
            np.add.at(ecal, owner, e_reco[these[joins]])
        merged_away[these[joins]] = True
    excess = cluster - expected
    over = excess > sigma
    photon = np.minimum(excess, ecal) if EXCESS_PHOTONS_FIRST else np.zeros(len(tracks))
    photon = np.where(over & (photon > PHOTON_THRESHOLD), photon, 0.0)
    hadron = np.where(over, excess - photon, 0.0)
    hadron = np.where(hadron > NEUTRAL_HADRON_THRESHOLD, hadron, 0.0)
    made = np.concatenate([photon, hadron])
    out = made > 0
    pdg = np.repeat(np.array([22, 130], np.int32), len(tracks))
    return (merged_away, np.tile(tracks, 2)[out], made[out], pdg[out],
            np.tile(ecal_phi, 2)[out])  # fmt: skip
