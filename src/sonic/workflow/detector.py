"""A parametric CMS particle-flow response: generator particles in, PF candidates out.

This stands in for GEANT plus CMS reconstruction, with numbers of the size the
CMS detector papers quote; it is meant to give DeepMET and PF MET realistic
ingredients (tracking that removes charged pileup, calorimeters that smear
neutrals), not to reproduce CMS to the percent.  Per particle, in this order:

Acceptance and identification
    Neutrinos are dropped.  Charged particles with |eta| < 2.5 and pT > 0.3 GeV
    are tracked with efficiency 0.98 (muons, electrons), 0.95 (hadrons above
    1 GeV) or 0.85 (hadrons below).  Tracked charged hadrons become ``+-211``,
    electrons ``+-11`` and muons ``+-13``.  A charged particle that is not
    tracked is seen by the calorimeters instead, as a neutral.  Neutrals:
    photons and electrons give ``22`` and hadrons ``130`` for |eta| < 3; in the
    forward calorimeter (3 < |eta| < 5) EM particles give ``2`` and hadrons
    ``1``.  Untracked muons and anything beyond |eta| = 5 are lost.
Energy and momentum
    Tracks: sigma(pT)/pT = 1% (+) 0.015% x pT.  Photons and electrons in the
    ECAL: sigma(E)/E = 3%/sqrt(E) (+) 0.5%.  Neutral hadrons: 100%/sqrt(E)
    (+) 5%.  Forward calorimeter: 180%/sqrt(E) (+) 10%.  Thresholds: photons
    0.5 GeV, neutral hadrons 1 GeV, forward 10 GeV.  Masses are those PF assigns
    (pion mass for charged hadrons, 0 for neutrals).
Impact parameters
    From each particle's production point (Pythia's vertex plus its
    collision's z position, beam spot sigma_z = 3.5 cm) against the
    hard-scatter vertex, straight-line approximation, smeared by
    sigma(d0) = 20 um (+) 100 um/pT and sigma(dz) = 30 um (+) 150 um/pT.
    Neutrals have d0 = dz = 0.
fromPV (as ``pat::PackedCandidate::fromPV``)
    Charged: 3 (used in the PV fit) for hard-scatter tracks with pT > 0.5 GeV
    within 3 sigma in dz; otherwise 2 if |dz| < 0.1 cm, 1 if |dz| < 0.3 cm,
    else 0.  Neutrals: 3.
PUPPI-like weight
    Charged: 1 if fromPV >= 1, else 0.  Central neutrals (|eta| < 2.5): the
    PUPPI local shape alpha = log sum (pT_j / dR_ij)^2 over PV charged
    candidates j within 0.01 < dR < 0.4, compared with the same alpha of the
    charged pileup candidates: w = F_chi2(1 dof)((alpha - median)^2 / rms^2)
    above the median, 0 below.  Forward neutrals: alpha over all neighbours,
    compared with the forward neutrals' own distribution.  Weights are 1 when
    the event has no charged pileup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Beam-spot length in z (cm): where collisions, hard or pileup, happen.
BEAM_SPOT_SIGMA_Z = 3.5
NEUTRINOS = (12, 14, 16)
CHARGED_HADRON_MASS = 0.13957
LEPTON_MASS = {11: 0.000511, 13: 0.10566}


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


def reconstruct(
    parts: Particles, is_pileup: np.ndarray, dz_collision: np.ndarray, rng: np.random.Generator
) -> Candidates:
    """PF candidates from all particles of an event (hard scatter plus pileup).

    ``is_pileup`` marks particles from pileup collisions; ``dz_collision`` is
    each particle's collision z minus the hard-scatter z (0 for the hard one).
    """
    apdg = np.abs(parts.pdg)
    pt_true = np.hypot(parts.px, parts.py)
    visible = ~np.isin(apdg, NEUTRINOS) & (pt_true > 1e-6)
    p = np.sqrt(pt_true**2 + parts.pz**2)
    eta = np.arcsinh(np.divide(parts.pz, pt_true, out=np.zeros_like(p), where=pt_true > 0))
    phi = np.arctan2(parts.py, parts.px)
    aeta = np.abs(eta)
    charged = parts.charge != 0
    n = len(apdg)

    eff = np.where(np.isin(apdg, (11, 13)), 0.98, np.where(pt_true > 1.0, 0.95, 0.85))
    tracked = visible & charged & (aeta < 2.5) & (pt_true > 0.3) & (rng.random(n) < eff)
    em = (apdg == 22) | (apdg == 11)
    calo = visible & ~tracked & (apdg != 13) & (aeta < 5.0)
    forward = calo & (aeta >= 3.0)

    # Momentum scale factors, one per particle (direction kept).
    sigma = np.zeros(n)
    sigma[tracked] = _quad(0.01, 1.5e-4 * pt_true[tracked])
    e = p  # massless approximation for calorimeter resolution
    sel = calo & ~forward & em
    sigma[sel] = _quad(0.03 / np.sqrt(e[sel]), 0.005)
    sel = calo & ~forward & ~em
    sigma[sel] = _quad(1.0 / np.sqrt(e[sel]), 0.05)
    sigma[forward] = _quad(1.8 / np.sqrt(e[forward]), 0.10)
    scale = np.clip(1.0 + sigma * rng.standard_normal(n), 0.0, None)
    pt = pt_true * scale
    e_reco = p * scale
    threshold = np.where(forward, 10.0, np.where(em, 0.5, 1.0))
    keep = tracked | (calo & (e_reco > threshold))

    pdg = np.zeros(n, dtype=np.int32)
    sign = np.sign(parts.charge).astype(np.int32)
    lep = tracked & np.isin(apdg, (11, 13))
    pdg[lep] = parts.pdg[lep]
    pdg[calo & ~forward] = np.where(em[calo & ~forward], 22, 130)
    pdg[forward] = np.where(em[forward], 2, 1)
    pdg[tracked & ~lep] = sign[tracked & ~lep] * 211  # pi+ is +211 with charge +1
    charge = np.where(tracked, sign, 0).astype(np.int32)
    mass = np.where(tracked, CHARGED_HADRON_MASS, 0.0)
    for lepton, m in LEPTON_MASS.items():
        mass[tracked & (apdg == lepton)] = m

    # Impact parameters against the hard-scatter vertex.
    ux, uy = parts.px / np.maximum(pt_true, 1e-9), parts.py / np.maximum(pt_true, 1e-9)
    d0_true = -parts.vx * uy + parts.vy * ux
    dz_true = dz_collision + parts.vz - (parts.vx * ux + parts.vy * uy) * parts.pz / np.maximum(
        pt_true, 1e-9
    )
    sig_d0, sig_dz = sigma_d0(pt), sigma_dz(pt)
    d0 = np.where(tracked, d0_true + sig_d0 * rng.standard_normal(n), 0.0)
    dz = np.where(tracked, dz_true + sig_dz * rng.standard_normal(n), 0.0)

    from_pv = np.full(n, 3, dtype=np.int32)
    adz = np.abs(dz)
    in_fit = ~is_pileup & (pt > 0.5) & (adz < 3 * sig_dz)
    from_pv[tracked] = np.select(
        [in_fit[tracked], adz[tracked] < 0.1, adz[tracked] < 0.3], [3, 2, 1], 0
    )

    cands = Candidates(pt[keep], eta[keep], phi[keep], mass[keep], pdg[keep], charge[keep],
                       d0[keep], dz[keep], from_pv[keep], np.ones(int(keep.sum())),
                       is_pileup[keep])  # fmt: skip
    cands.puppiWeight = puppi_weights(cands)
    return cands.sorted_by_pt()


_erf = np.frompyfunc(math.erf, 1, 1)


def _alpha(c: Candidates, mask: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PUPPI's local shape: log sum (pT_j / dR_ij)^2 over ``ref`` within 0.01 < dR < 0.4."""
    from scipy.spatial import cKDTree

    pts = np.column_stack([c.eta[mask], c.phi[mask]])
    r_eta, r_phi, r_pt = c.eta[ref], c.phi[ref], c.pt[ref]
    # Copies at phi -+ 2 pi make the distance periodic in phi.
    wrapped = np.concatenate([r_phi - 2 * math.pi, r_phi, r_phi + 2 * math.pi])
    ref_pts = np.column_stack([np.tile(r_eta, 3), wrapped])
    pairs = cKDTree(pts).sparse_distance_matrix(cKDTree(ref_pts), 0.4, output_type="ndarray")
    near = pairs[(pairs["v"] > 0.01) & (pairs["v"] < 0.4)]
    s = np.bincount(near["i"], (np.tile(r_pt, 3)[near["j"]] / near["v"]) ** 2,
                    minlength=len(pts)).astype(np.float64)  # fmt: skip
    return np.log(s, out=np.full_like(s, -np.inf), where=s > 0)  # -inf: no neighbour at all


def _chi2_weight(alpha: np.ndarray, pileup_alpha: np.ndarray) -> np.ndarray:
    """1-dof chi2 probability of alpha against the pileup alphas (median, left RMS)."""
    pileup_alpha = pileup_alpha[np.isfinite(pileup_alpha)]
    if len(pileup_alpha) < 2:
        return np.where(np.isfinite(alpha), 1.0, 0.0)
    median = float(np.median(pileup_alpha))
    below = pileup_alpha[pileup_alpha <= median]
    rms = max(math.sqrt(float(np.mean((below - median) ** 2))), 1e-6) if len(below) > 1 else 1.0
    chi2 = (alpha - median) ** 2 / rms**2
    with np.errstate(invalid="ignore"):
        w = _erf(np.sqrt(np.where(np.isfinite(chi2), chi2, 0.0) / 2)).astype(np.float64)
    return np.where(alpha > median, w, 0.0)


def puppi_weights(c: Candidates) -> np.ndarray:
    """PUPPI-like weights (see the module docstring)."""
    charged = c.charge != 0
    weights = np.where(charged, (c.fromPV >= 1).astype(np.float64), 1.0)
    pv = charged & (c.fromPV >= 1)
    pu = charged & (c.fromPV == 0)
    central = ~charged & (np.abs(c.eta) < 2.5)
    forward = ~charged & ~central
    if pu.any() and central.any():
        weights[central] = _chi2_weight(_alpha(c, central, pv), _alpha(c, pu, pv))
    if pu.any() and forward.sum() > 1:
        # No tracks: alpha over all neighbours, against the forward neutrals
        # themselves, which at any real pileup are mostly pileup.
        a = _alpha(c, forward, np.abs(c.eta) > 2.1)  # all that can be within dR 0.4
        weights[forward] = _chi2_weight(a, a)
    return weights
