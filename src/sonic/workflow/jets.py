"""Jets from the particle-flow candidates, clustered with FastJet as CMS clusters them.

CMS's ParticleNet taggers run on two jet collections, and so does this module:

- **AK4**: anti-kt, R = 0.4, on CHS candidates (charged candidates not
  associated with the primary vertex, ``fromPV == 0``, removed before
  clustering), jets above 15 GeV within |eta| < 2.5 (the phase space of the
  AK4 ParticleNet training);
- **AK8**: anti-kt, R = 0.8, on PUPPI-weighted candidates (each four-vector
  scaled by its ``puppiWeight``), jets above 150 GeV, as CMS's AK8 PUPPI jets
  for ParticleNet's boosted-object tagging.

A chunk of events is clustered in one call through FastJet's awkward-array
interface (the ``fastjet`` package from PyPI).  Jets come out sorted by pT and
each knows its constituents as indices into its event's candidate arrays,
highest pT first, which is the order CMSSW's feature evaluator fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class JetSpec:
    """A jet collection: algorithm radius, what it clusters, and the jets kept."""

    name: str
    radius: float
    inputs: str  # "chs" | "puppi"
    min_pt: float
    max_abs_eta: float


AK4 = JetSpec("ak4", 0.4, "chs", 15.0, 2.5)
AK8 = JetSpec("ak8", 0.8, "puppi", 150.0, 2.4)
JET_SPECS = {s.name: s for s in (AK4, AK8)}


@dataclass(slots=True)
class Jets:
    """One chunk's jets (awkward arrays, one list per event)."""

    pt: Any
    eta: Any
    phi: Any
    mass: Any
    #: Per jet, the indices of its constituents in the event's candidate arrays, by pT.
    constituents: Any

    def counts(self) -> np.ndarray:
        import awkward as ak

        return ak.to_numpy(ak.num(self.pt, axis=1))


def _fastjet() -> Any:
    try:
        import fastjet
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "jet clustering needs FastJet: pip install 'fastjet>=3.4' (or the project's "
            "'workflow' extra)"
        ) from err
    return fastjet


def cluster(candidates: dict[str, Any], spec: JetSpec = AK4) -> Jets:
    """Cluster each event's candidates (awkward arrays ``pt``, ``eta``, ``phi``, ``mass``,
    plus ``charge`` and ``fromPV`` for CHS, ``puppiWeight`` for PUPPI) into ``spec`` jets."""
    import awkward as ak

    fastjet = _fastjet()
    pt, eta, phi, mass = (candidates[k] for k in ("pt", "eta", "phi", "mass"))
    index = ak.local_index(pt, axis=1)
    if spec.inputs == "chs":
        keep = ~((candidates["charge"] != 0) & (candidates["fromPV"] == 0))
        weight = ak.ones_like(pt)
    elif spec.inputs == "puppi":
        weight = candidates["puppiWeight"]
        keep = weight > 0
    else:
        raise ValueError(f"jet inputs must be 'chs' or 'puppi', not {spec.inputs!r}")
    pt, eta, phi, mass, weight, index = (a[keep] for a in (pt, eta, phi, mass, weight, index))
    mt = np.sqrt(pt**2 + mass**2)
    wpt = weight * pt
    vectors = ak.zip({"px": wpt * np.cos(phi), "py": wpt * np.sin(phi),
                      "pz": wpt * np.sinh(eta), "E": weight * mt * np.cosh(eta)})  # fmt: skip
    sequence = fastjet.ClusterSequence(vectors, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                      spec.radius))  # fmt: skip
    raw = sequence.inclusive_jets(min_pt=spec.min_pt)
    members = sequence.constituent_index(min_pt=spec.min_pt)
    jet_pt = np.hypot(raw.px, raw.py)
    p = np.sqrt(jet_pt**2 + raw.pz**2)
    jet_eta = np.arcsinh(raw.pz / ak.where(jet_pt > 0, jet_pt, 1e-9))
    jet_phi = np.arctan2(raw.py, raw.px)
    jet_mass = np.sqrt(np.maximum(raw.E**2 - p**2, 0.0))
    order = ak.argsort(jet_pt, axis=1, ascending=False)
    accepted = np.abs(jet_eta[order]) < spec.max_abs_eta
    order = order[accepted]
    # Constituent indices point into the clustered (kept) candidates: map them back to the
    # event's candidate arrays, then order each jet's constituents by the pT the jet saw
    # (PUPPI-weighted for PUPPI jets, as CMSSW's tag-info producer orders them).
    original = _take_nested(index, members[order])
    seen = candidates["pt"] * (candidates["puppiWeight"] if spec.inputs == "puppi" else 1.0)
    by_pt = ak.argsort(_take_nested(seen, original), axis=2, ascending=False)
    return Jets(jet_pt[order], jet_eta[order], jet_phi[order], jet_mass[order],
                original[by_pt])  # fmt: skip


def _take_nested(values: Any, indices: Any) -> Any:
    """``values[event][indices[event][jet]]`` for every event and jet (awkward)."""
    import awkward as ak

    counts = ak.num(indices, axis=2)
    flat = ak.flatten(indices, axis=2)
    taken = values[flat]
    return ak.unflatten(taken, ak.flatten(counts), axis=1)


#: What :func:`cluster_event` returns per jet, in column order.
JET_COLUMNS = ("pt", "eta", "phi", "mass", "nConstituents")
#: The candidate columns :func:`cluster_event` reads (CHS needs charge and fromPV).
EVENT_FIELDS = ("pt", "eta", "phi", "mass", "charge", "fromPV")


def cluster_event(candidates: dict[str, np.ndarray], spec: JetSpec = AK4) -> np.ndarray:
    """One event's jets as a float32 [n_jets, 5] table (:data:`JET_COLUMNS`), pT-ordered: the
    clustering the ``ak4_clustering`` example model serves, the same as :func:`cluster` (FastJet's
    single-event interface: its multi-event one costs tens of ms to set up for one event)."""
    import awkward as ak

    fastjet = _fastjet()
    pt, eta, phi, mass = (np.asarray(candidates[k], np.float64) for k in ("pt", "eta", "phi",
                                                                          "mass"))  # fmt: skip
    if spec.inputs == "chs":
        keep = ~((np.asarray(candidates["charge"]) != 0) & (np.asarray(candidates["fromPV"]) == 0))
        weight = np.ones_like(pt)
    else:
        weight = np.asarray(candidates["puppiWeight"], np.float64)
        keep = weight > 0
    pt, eta, phi, mass, weight = (a[keep] for a in (pt, eta, phi, mass, weight))
    if len(pt) == 0:
        return np.zeros((0, len(JET_COLUMNS)), np.float32)
    wpt, mt = weight * pt, np.sqrt(pt**2 + mass**2)
    vectors = ak.Array({"px": wpt * np.cos(phi), "py": wpt * np.sin(phi),
                        "pz": wpt * np.sinh(eta), "E": weight * mt * np.cosh(eta)})  # fmt: skip
    sequence = fastjet.ClusterSequence(vectors, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                      spec.radius))  # fmt: skip
    raw = sequence.inclusive_jets(min_pt=spec.min_pt)
    n = ak.to_numpy(ak.num(sequence.constituent_index(min_pt=spec.min_pt), axis=1))
    px, py, pz, e = (ak.to_numpy(raw[k]) for k in ("px", "py", "pz", "E"))
    jet_pt = np.hypot(px, py)
    jet_eta = np.arcsinh(pz / np.where(jet_pt > 0, jet_pt, 1e-9))
    jet_mass = np.sqrt(np.maximum(e**2 - jet_pt**2 - pz**2, 0.0))
    table = np.stack([jet_pt, jet_eta, np.arctan2(py, px), jet_mass, n], axis=1)
    table = table[np.argsort(-jet_pt, kind="stable")]
    return table[np.abs(table[:, 1]) < spec.max_abs_eta].astype(np.float32)
