"""PUPPI as CMS runs it: ``CommonTools/PileupAlgos`` (PuppiProducer, PuppiContainer,
PuppiAlgo) with the settings of ``Puppi_cff``.

PUPPI gives each candidate a weight for coming from the primary vertex:

Charged candidates
    1 if they come from the PV (``fromPV == 3``, or ``fromPV`` 1-2 with
    |dz| < 0.3 cm, ``UseDeltaZCut``/``DeltaZCut``), else 0.
Neutral candidates
    The local shape ``alpha = log sum_j (pT_j / dR_ij)^2`` over neighbours j
    within 0.01 < dR < 0.4 (PuppiAlgo's algorithm 5).  Central (|eta| < 2.5):
    the neighbours are the charged candidates from the PV (``useCharged``).
    Forward: no tracks, so all candidates are neighbours.  The weight is the
    chi-square (1 dof) probability of (alpha - median)^2 / RMS^2 when alpha
    is above the median, 0 below, where median and RMS describe pileup: the
    alphas, computed the same way, of the charged pileup candidates with
    pT > 0.1 GeV and |eta| < 2.0 (``EtaMaxExtrap``; forward, the central
    charged pileup's alpha scaled by the eta region's ``MedEtaSF`` and
    ``RMSEtaSF``).  Then:

    - the low-pileup correction (``applyLowPUCorr``): with few pileup tracks
      the median sits too high; it moves down by the chi-square quantile of
      the fraction of PV charged alphas below it, counted against half the
      pileup ones;
    - weights below ``MinPuppiWeight`` (0.01) become 0;
    - a neutral with w pT below ``MinNeutralPt + MinNeutralPtSlope * nPV`` gets 0;
    - a neutral above ``PtMaxNeutrals`` (200 GeV) keeps weight 1.

With no charged pileup at all the neutrals' weights are 1 (before the cuts).
The region parameters are Puppi_cff's (Run 2 and Run 3 settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2 as chi2_distribution

from sonic.workflow.primary_vertex import PV_LOOSE, PV_USED_IN_FIT

CONE = 0.4
MIN_DR = 0.01
DELTA_Z_CUT = 0.3
RMS_PT_MIN = 0.1
ETA_MAX_EXTRAP = 2.0
MIN_PUPPI_WEIGHT = 0.01
PT_MAX_NEUTRALS = 200.0


@dataclass(frozen=True, slots=True)
class Region:
    """One eta region of Puppi_cff's ``algos``."""

    eta_min: float
    eta_max: float
    min_neutral_pt: float
    min_neutral_pt_slope: float
    med_eta_sf: float
    rms_eta_sf: float
    #: Neighbours: the PV's charged candidates (True, central) or all candidates (forward).
    use_charged: bool


REGIONS = (
    Region(0.0, 2.5, 0.2, 0.015, 1.0, 1.0, True),
    Region(2.5, 3.0, 1.7, 0.08, 0.90, 1.20, False),
    Region(3.0, 10.0, 2.0, 0.08, 0.75, 0.95, False),
)


def charged_from_pv(charge: np.ndarray, from_pv: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Charged candidates PUPPI counts as coming from the PV."""
    loose = (from_pv >= PV_LOOSE) & (np.abs(dz) < DELTA_Z_CUT)
    return (charge != 0) & ((from_pv == PV_USED_IN_FIT) | loose)


def alpha(eta: np.ndarray, phi: np.ndarray, pt: np.ndarray, targets: np.ndarray,
          neighbours: np.ndarray) -> np.ndarray:  # fmt: skip
    """PUPPI's local shape of each ``targets`` candidate over the ``neighbours`` ones (masks);
    -inf where there is no neighbour in the cone."""
    from scipy.spatial import cKDTree

    out = np.full(int(targets.sum()), -np.inf)
    if not out.size or not neighbours.any():
        return out
    pts = np.column_stack([eta[targets], phi[targets]])
    r_eta, r_phi, r_pt = eta[neighbours], phi[neighbours], pt[neighbours]
    # Copies at phi -+ 2 pi make the distance periodic in phi.
    ref = np.column_stack(
        [np.tile(r_eta, 3), np.concatenate([r_phi - 2 * math.pi, r_phi, r_phi + 2 * math.pi])]
    )
    pairs = cKDTree(pts).sparse_distance_matrix(cKDTree(ref), CONE, output_type="ndarray")
    near = pairs[(pairs["v"] > MIN_DR) & (pairs["v"] < CONE)]
    s = np.bincount(near["i"], (np.tile(r_pt, 3)[near["j"]] / near["v"]) ** 2,
                    minlength=len(pts)).astype(np.float64)  # fmt: skip
    np.log(s, out=out, where=s > 0)
    return out


@dataclass(frozen=True, slots=True)
class PileupShape:
    """Median and RMS of the pileup's alpha in one region (None: no charged pileup)."""

    median: float
    rms: float


def pileup_shape(pu_alpha: np.ndarray, pv_alpha: np.ndarray, region: Region) -> PileupShape | None:
    """The region's reference from the charged pileup's alphas (and the PV's, for the low-pileup
    correction), both already restricted to |eta| < EtaMaxExtrap and pT > 0.1 GeV."""
    pu = pu_alpha[np.isfinite(pu_alpha)]
    if len(pu) == 0:
        return None
    median = float(np.median(pu)) * region.med_eta_sf
    rms = math.sqrt(float(np.mean((pu - float(np.median(pu))) ** 2))) * region.rms_eta_sf
    rms = max(rms, 1e-6)
    below = int(np.sum(pv_alpha[np.isfinite(pv_alpha)] <= median))
    adjust = below / (below + 0.5 * len(pu))
    if adjust > 0:
        median -= math.sqrt(chi2_distribution.ppf(adjust, 1)) * rms
    return PileupShape(median, rms)


def neutral_weight(a: np.ndarray, shape: PileupShape | None) -> np.ndarray:
    """The chi-square weight of neutral alphas against the pileup's shape."""
    if shape is None:
        return np.where(np.isfinite(a), 1.0, 0.0)
    finite = np.isfinite(a)
    chi2 = np.where(finite & (a > shape.median), (a - shape.median) ** 2 / shape.rms**2, 0.0)
    return np.where(finite, chi2_distribution.cdf(chi2, 1), 0.0)


def puppi_weights(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, charge: np.ndarray,
                  from_pv: np.ndarray, dz: np.ndarray, n_pv: int) -> np.ndarray:  # fmt: skip
    """Every candidate's PUPPI weight in one event (see the module docstring)."""
    charged = charge != 0
    pv = charged_from_pv(charge, from_pv, dz)
    weights = pv.astype(np.float64)
    everyone = np.ones(len(pt), bool)
    reference = np.abs(eta) < ETA_MAX_EXTRAP
    reference &= pt > RMS_PT_MIN
    pu_ref, pv_ref = charged & ~pv & reference, pv & reference
    for use_charged in (True, False):
        regions = [r for r in REGIONS if r.use_charged == use_charged]
        neighbours = pv if use_charged else everyone
        in_regions = np.zeros(len(pt), bool)
        for r in regions:
            in_regions |= (np.abs(eta) >= r.eta_min) & (np.abs(eta) < r.eta_max)
        targets = ~charged & in_regions
        if not targets.any():
            continue
        pu_alpha = alpha(eta, phi, pt, pu_ref, neighbours)
        pv_alpha = alpha(eta, phi, pt, pv_ref, neighbours)
        target_alpha = np.full(len(pt), -np.inf)
        target_alpha[targets] = alpha(eta, phi, pt, targets, neighbours)
        for r in regions:
            sel = targets & (np.abs(eta) >= r.eta_min) & (np.abs(eta) < r.eta_max)
            w = neutral_weight(target_alpha[sel], pileup_shape(pu_alpha, pv_alpha, r))
            w[w < MIN_PUPPI_WEIGHT] = 0.0
            w[w * pt[sel] < r.min_neutral_pt + r.min_neutral_pt_slope * n_pv] = 0.0
            w[pt[sel] > PT_MAX_NEUTRALS] = 1.0
            weights[sel] = w
    return weights
