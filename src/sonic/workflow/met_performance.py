"""MET performance as CMS measures it: response and response-corrected resolution against q_T.

A narrower MET - GenMET distribution alone can mislead: an estimator that
shrinks every MET toward zero looks precise.  CMS therefore measures each
estimator against a boson of known transverse momentum q_T, in bins of q_T:

- **Z -> mu mu** (no genuine MET): q_T is the dimuon's; the hadronic recoil is
  u = -(MET + q_T), split into u_par (along q_T; about -q_T when the recoil is
  measured right) and u_perp (across it).  The response is R = -<u_par>/<q_T>,
  and the resolutions sigma(u_par)/R and sigma(u_perp)/R are corrected by it
  (sigma(u_par) is the spread of u_par around -R q_T, event by event, so that
  the spread of q_T within a bin does not count).
- **Z -> nu nu**: q_T is the neutrinos' (GenMET), and MET itself is the
  boson's measurement: MET_par should equal q_T.  R = <MET_par>/<q_T>, and
  sigma(MET_par)/R, sigma(MET_perp)/R.

Both reduce to one computation, :func:`binned`, on the component that ideally
equals q_T (``-u_par`` or ``MET_par``) and the perpendicular one; sigma is the
standard deviation, and every number has a bootstrap error (resampling the
events of each bin); :func:`paired` compares two estimators on the same events.
:func:`dimuon` selects the Z from the PF candidates and :func:`chs_met` gives CHS MET
(charged candidates from pileup vertices removed).  :func:`seed_spread` takes the response's
error from independent samples instead, which the bootstrap cannot see: a sample's events share
one pool of pileup collisions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sonic.workflow.primary_vertex import charged_pileup

#: q_T bins in GeV (the last is open), as CMS's recoil studies bin them.
QT_BINS = (0.0, 50.0, 100.0, 150.0, 250.0, math.inf)
MUON = 13
Z_WINDOW = (60.0, 120.0)


@dataclass(frozen=True, slots=True)
class BinResult:
    """One q_T bin: events, mean q_T, response, and the response-corrected resolutions (GeV),
    each with its bootstrap error."""

    lo: float
    hi: float
    events: int
    qt: float
    response: float
    response_err: float
    sigma_par: float
    sigma_par_err: float
    sigma_perp: float
    sigma_perp_err: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def components(x: np.ndarray, y: np.ndarray, qx: np.ndarray,
               qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(parallel, perpendicular) components of the vectors (x, y) relative to (qx, qy)."""
    qt = np.hypot(qx, qy)
    ux, uy = qx / np.where(qt > 0, qt, 1.0), qy / np.where(qt > 0, qt, 1.0)
    return x * ux + y * uy, -x * uy + y * ux


def recoil(met_x: np.ndarray, met_y: np.ndarray, qx: np.ndarray,
           qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(u_par, u_perp) of the hadronic recoil u = -(MET + q_T)."""
    return components(-(met_x + qx), -(met_y + qy), qx, qy)


def _stats(par: np.ndarray, perp: np.ndarray, qt: np.ndarray) -> tuple[float, float, float]:
    response = float(np.mean(par) / np.mean(qt))
    scale = response if response > 0 else math.nan
    # The parallel spread around R q_T, event by event: q_T's own spread within the bin
    # would otherwise count as resolution.
    return response, float(np.std(par - response * qt)) / scale, float(np.std(perp)) / scale


def _populated(qt: np.ndarray, bins: tuple[float, ...],
               min_events: int) -> Iterator[tuple[float, float, np.ndarray]]:  # fmt: skip
    """(lo, hi, the events' indices) of each q_T bin with at least ``min_events`` events."""
    for lo, hi in itertools.pairwise(bins):
        idx = np.flatnonzero((qt >= lo) & (qt < hi))
        if len(idx) >= min_events:
            yield lo, hi, idx


def binned(par: np.ndarray, perp: np.ndarray, qt: np.ndarray,
           bins: tuple[float, ...] = QT_BINS, bootstrap: int = 200, seed: int = 0,
           min_events: int = 5) -> list[BinResult]:  # fmt: skip
    """Response and response-corrected resolutions per q_T bin; ``par`` is the component that
    ideally equals q_T (``-u_par`` for a recoil, ``MET_par`` for genuine MET).  Bins with fewer
    than ``min_events`` events are left out."""
    rng = np.random.default_rng(seed)
    out = []
    for lo, hi, idx in _populated(qt, bins, min_events):
        value = _stats(par[idx], perp[idx], qt[idx])
        draws = np.array([_stats(par[s], perp[s], qt[s])
                          for s in rng.choice(idx, size=(bootstrap, len(idx)))])  # fmt: skip
        errors = np.nanstd(draws, axis=0)
        out.append(BinResult(lo, hi, len(idx), float(np.mean(qt[idx])), value[0],
                             float(errors[0]), value[1], float(errors[1]), value[2],
                             float(errors[2])))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class PairedBin:
    """One q_T bin: sigma_perp/R of one estimator minus another's on the same events (GeV),
    with its bootstrap error."""

    lo: float
    hi: float
    events: int
    difference: float
    error: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], qt: np.ndarray,
           bins: tuple[float, ...] = QT_BINS, bootstrap: int = 200, seed: int = 0,
           min_events: int = 5) -> list[PairedBin]:  # fmt: skip
    """sigma_perp/R of estimator ``a`` minus ``b`` (each ``(par, perp)`` as :func:`binned`
    takes them) per q_T bin, resampling the same events for both: what the two share (the
    hard scatter, most of the pileup) cancels in the error, which two independent bootstrap
    errors would count twice.  Two estimators that differ by a few per cent only show
    their order this way."""
    rng = np.random.default_rng(seed)

    def diff(s: np.ndarray) -> float:
        return _stats(a[0][s], a[1][s], qt[s])[2] - _stats(b[0][s], b[1][s], qt[s])[2]

    out = []
    for lo, hi, idx in _populated(qt, bins, min_events):
        draws = [diff(s) for s in rng.choice(idx, size=(bootstrap, len(idx)))]
        out.append(PairedBin(lo, hi, len(idx), diff(idx), float(np.nanstd(draws))))
    return out


def chs_met(px: np.ndarray, py: np.ndarray, charge: np.ndarray,
            from_pv: np.ndarray) -> tuple[float, float]:  # fmt: skip
    """One event's CHS MET: minus the sum over candidates without the charged ones that come
    from a pileup vertex (``fromPV == 0``)."""
    keep = ~charged_pileup(charge, from_pv)
    return -float(px[keep].sum()), -float(py[keep].sum())


def dimuon(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, pdg: np.ndarray,
           charge: np.ndarray) -> tuple[float, float] | None:  # fmt: skip
    """One event's Z -> mu mu candidate: (q_x, q_y) of the two highest-pT muons if they have
    opposite charges and a mass within 60-120 GeV, else None."""
    muons = np.flatnonzero(np.abs(pdg) == MUON)
    if len(muons) < 2:
        return None
    a, b = muons[np.argsort(-pt[muons], kind="stable")[:2]]
    if charge[a] * charge[b] >= 0:
        return None
    m2 = 2 * pt[a] * pt[b] * (math.cosh(eta[a] - eta[b]) - math.cos(phi[a] - phi[b]))
    if not Z_WINDOW[0] ** 2 <= m2 <= Z_WINDOW[1] ** 2:
        return None
    return (float(pt[a] * math.cos(phi[a]) + pt[b] * math.cos(phi[b])),
            float(pt[a] * math.sin(phi[a]) + pt[b] * math.sin(phi[b])))  # fmt: skip


#: The estimators a study compares, by the (pt, phi) columns of their MET; the DeepMETs come
#: from the workflow's output, the others from the sample, CHS from its candidates.
ESTIMATORS = {"PF (raw)": ("RawPFMET_pt", "RawPFMET_phi"), "CHS": None,
              "PUPPI": ("PuppiMET_pt", "PuppiMET_phi"),
              "DeepMET": ("DeepMETResolutionTune_pt", "DeepMETResolutionTune_phi"),
              "DeepMET (response tune)": ("DeepMETResponseTune_pt",
                                          "DeepMETResponseTune_phi")}  # fmt: skip
FROM_OUTPUTS = ("DeepMET", "DeepMET (response tune)")
PF_COLUMNS = ("pt", "eta", "phi", "pdgId", "charge", "fromPV")


def met_vectors(table: dict[str, Any], pt: str, phi: str) -> np.ndarray:
    """[n, 2] (x, y) of a (pt, phi) pair of columns."""
    r, a = (np.asarray(table[c], dtype=np.float64) for c in (pt, phi))
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def measured(sample: Any, outputs: dict[str, Any], process: str,
             extra: dict[str, np.ndarray] | None = None,
             ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:  # fmt: skip
    """Each estimator's ``(par, perp)`` per event of one process, and the events' q_T: what
    :func:`binned` and :func:`paired` take.  ``sample`` is the generated ROOT file
    (candidates, MET columns), ``outputs`` the workflow's columns for the same events
    (``DeepMET*Tune_*``; an estimator whose columns are missing is left out); ``extra`` more
    estimators as [n, 2] MET vectors per event.  ``process`` is ``zmumu`` (recoil against the
    dimuon) or ``znunu`` (MET against the neutrinos), or one of their Z-plus-jet samples
    (``zmumu_highpt``, ``zmumu_midpt``, ``znunu_highpt``); in a file
    that mixes processes only that process's events count."""
    import uproot

    from sonic.workflow.generate import HARD_PROCESSES

    kind = process.split("_")[0]
    if kind not in ("zmumu", "znunu"):
        raise ValueError("process must be 'zmumu' or 'znunu' (or their Z-plus-jet samples), "
                         f"not {process!r}")  # fmt: skip
    in_file = [c for label, cols in ESTIMATORS.items() if cols and label not in FROM_OUTPUTS
               for c in cols]  # fmt: skip
    with uproot.open(sample) as f:
        tree = f["Events"]
        a = tree.arrays([f"PFCands_{k}" for k in PF_COLUMNS] + ["GenMET_pt", "GenMET_phi",
                        *in_file, *(["GenProcess_id"] if "GenProcess_id" in tree else [])],
                        library="np")  # fmt: skip
    met = {label: met_vectors(outputs if label in FROM_OUTPUTS else a, *cols)
           for label, cols in ESTIMATORS.items()
           if cols and (label not in FROM_OUTPUTS or cols[0] in outputs)}  # fmt: skip
    met.update(extra or {})
    n = len(a["GenMET_pt"])
    met["CHS"] = np.zeros((n, 2))
    q = np.full((n, 2), np.nan)
    for ev in range(n):
        c = {k: a[f"PFCands_{k}"][ev] for k in PF_COLUMNS}
        met["CHS"][ev] = chs_met(c["pt"] * np.cos(c["phi"]), c["pt"] * np.sin(c["phi"]),
                                 c["charge"], c["fromPV"])  # fmt: skip
        if kind == "zmumu" and (pair := dimuon(c["pt"], c["eta"], c["phi"], c["pdgId"],
                                                  c["charge"])) is not None:  # fmt: skip
            q[ev] = pair
    if kind == "znunu":
        q = met_vectors(a, "GenMET_pt", "GenMET_phi")
    ok = np.isfinite(q[:, 0])
    if "GenProcess_id" in a:
        ok &= a["GenProcess_id"] == HARD_PROCESSES.index(process)
    qx, qy = q[ok, 0], q[ok, 1]
    out = {}
    for label in sorted(met, key=_order):
        m = met[label][ok]
        if kind == "zmumu":
            u_par, perp = recoil(m[:, 0], m[:, 1], qx, qy)
            out[label] = (-u_par, perp)
        else:
            out[label] = components(m[:, 0], m[:, 1], qx, qy)
    return out, np.hypot(qx, qy)


def study(sample: Any, outputs: dict[str, Any], process: str, bootstrap: int = 200,
          seed: int = 0, bins: tuple[float, ...] = QT_BINS,
          extra: dict[str, np.ndarray] | None = None) -> dict[str, list[BinResult]]:  # fmt: skip
    """Each estimator's performance on one process's events (:func:`measured`, then
    :func:`binned_each`)."""
    return binned_each(*measured(sample, outputs, process, extra), bins, bootstrap, seed)


def binned_each(per_event: dict[str, tuple[np.ndarray, np.ndarray]], qt: np.ndarray,
                bins: tuple[float, ...] = QT_BINS, bootstrap: int = 200,
                seed: int = 0) -> dict[str, list[BinResult]]:  # fmt: skip
    """:func:`binned` for each estimator of :func:`measured`'s result."""
    return {label: binned(par, perp, qt, bins, bootstrap=bootstrap, seed=seed)
            for label, (par, perp) in per_event.items()}  # fmt: skip


def mean_over_samples(values: list[float], errors: list[float]) -> tuple[float, float, float]:
    """The mean of one quantity measured on independent samples, its error, and the samples'
    mean bootstrap error.

    Every event of a sample draws its pileup from the same pool of collisions, so the events
    are not independent and the bootstrap, which resamples events, cannot see the pool's share
    of the error; the scatter between independent samples holds both.  A few samples estimate
    that scatter only roughly (three: to about half its size), so the error of the mean takes
    the larger of the two spreads, the samples' standard deviation or the bootstrap's error,
    divided by the square root of the number of samples."""
    if len(values) < 2:
        raise ValueError("the scatter between samples needs two seeds or more")
    v = np.array(values)
    boot = float(np.mean(errors))
    return float(v.mean()), max(float(v.std(ddof=1)), boot) / math.sqrt(len(v)), boot


@dataclass(frozen=True, slots=True)
class SeedSpread:
    """One q_T bin's ``quantity`` (a :class:`BinResult` field: the response, sigma_perp) on
    independent samples (one per seed): each sample's value, their mean and its error, beside
    the bootstrap's error of one sample (:func:`mean_over_samples`)."""

    lo: float
    hi: float
    seeds: list[int]
    quantity: str
    values: list[float]
    mean: float
    error: float
    bootstrap_err: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_spread(per_seed: dict[int, dict[str, list[BinResult]]],
                quantity: str = "response") -> dict[str, list[SeedSpread]]:  # fmt: skip
    """Each estimator's ``quantity`` per bin over samples of several seeds (:func:`binned_each`
    of each); a bin counts where every sample filled it."""
    seeds = list(per_seed)
    if len(seeds) < 2:
        raise ValueError("the scatter between samples needs two seeds or more")
    first = per_seed[seeds[0]]
    out: dict[str, list[SeedSpread]] = {}
    for label, bins in first.items():
        out[label] = []
        for b in bins:
            found = [x for s in seeds for x in per_seed[s][label] if x.lo == b.lo]
            if len(found) < len(seeds):
                continue
            values = [getattr(x, quantity) for x in found]
            errors = [getattr(x, f"{quantity}_err") for x in found]
            mean, error, boot = mean_over_samples(values, errors)
            out[label].append(SeedSpread(b.lo, b.hi, seeds, quantity, values, mean, error, boot))
    return out


def pileup_growth(scans: dict[int, dict[str, list[BinResult]]],
                  reference: str = "PF (raw)") -> dict[str, dict[str, Any]]:  # fmt: skip
    """How much each estimator's sigma_perp/R grows from the lowest pileup to the highest, on
    samples of several seeds: ``scans`` holds, per seed, each estimator's bin at each pileup
    in increasing order.  Per estimator: each seed's growth (GeV) and its ratio to the
    ``reference``'s growth on the same events, with their means and errors
    (:func:`mean_over_samples`; issue #24 asks PUPPI's at most half raw PF's)."""
    seeds = list(scans)
    out: dict[str, dict[str, Any]] = {}
    for label in scans[seeds[0]]:
        growth, growth_err, ratio, ratio_err = [], [], [], []
        for seed in seeds:
            lo, hi = scans[seed][label][0], scans[seed][label][-1]
            rlo, rhi = scans[seed][reference][0], scans[seed][reference][-1]
            g, dg = hi.sigma_perp - lo.sigma_perp, math.hypot(hi.sigma_perp_err, lo.sigma_perp_err)
            rg = rhi.sigma_perp - rlo.sigma_perp
            drg = math.hypot(rhi.sigma_perp_err, rlo.sigma_perp_err)
            growth.append(g)
            growth_err.append(dg)
            ratio.append(g / rg)
            relative = math.hypot(dg / g if g else 0.0, drg / rg)
            # the reference against itself is exactly one
            ratio_err.append(0.0 if label == reference else abs(g / rg) * relative)
        g_mean, g_error, _ = mean_over_samples(growth, growth_err)
        r_mean, r_error, _ = mean_over_samples(ratio, ratio_err)
        out[label] = {"seeds": seeds, "growth": growth, "growth_mean": g_mean,
                      "growth_error": g_error, "vs_reference": ratio,
                      "vs_reference_mean": r_mean, "vs_reference_error": r_error}  # fmt: skip
    return out


def _order(label: str) -> int:
    """The study's estimators in ESTIMATORS' order, extra ones after."""
    return list(ESTIMATORS).index(label) if label in ESTIMATORS else len(ESTIMATORS)


def fit_pileup(n_pu: np.ndarray, sigma: np.ndarray,
               sigma_err: np.ndarray) -> tuple[float, float, float, float]:  # fmt: skip
    """Fit sigma^2 = sigma_0^2 + n_PU s^2 (each pileup vertex adds s^2 of variance), weighted
    by the errors of sigma^2; returns (sigma_0, s, their errors) in GeV."""
    var, var_err = sigma**2, 2 * sigma * np.maximum(sigma_err, 1e-9)
    design = np.stack([np.ones_like(n_pu), n_pu], axis=1) / var_err[:, None]
    coef, *_ = np.linalg.lstsq(design, var / var_err, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    (a, b), (da, db) = coef, np.sqrt(np.diag(cov))
    s0, s = math.sqrt(max(a, 0.0)), math.sqrt(max(b, 0.0))
    return s0, s, da / (2 * s0) if s0 else math.inf, db / (2 * s) if s else math.inf
