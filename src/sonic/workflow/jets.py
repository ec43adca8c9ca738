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

from sonic.workflow.primary_vertex import charged_pileup


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

    def per_event(self) -> list[list[tuple[tuple[float, float, float], np.ndarray]]]:
        """Each event's jets as ((pt, eta, phi), constituent indices), from flat arrays (see
        :func:`flatten_events`)."""
        import awkward as ak

        axes = np.stack([ak.to_numpy(ak.flatten(a)) for a in (self.pt, self.eta, self.phi)],
                        axis=1).tolist()  # fmt: skip
        members = ak.to_numpy(ak.flatten(self.constituents, axis=None))
        ends = np.cumsum(ak.to_numpy(ak.flatten(ak.num(self.constituents, axis=2))))
        per_jet = np.split(members, ends[:-1]) if len(ends) else []
        jet_ends = np.cumsum(self.counts())
        return [[(tuple(axes[j]), per_jet[j]) for j in range(lo, hi)]
                for lo, hi in zip(np.concatenate([[0], jet_ends[:-1]]), jet_ends,
                                  strict=True)]  # fmt: skip


def flatten_events(columns: dict[str, Any], fields: tuple[str, ...],
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """The jagged ``fields`` of a chunk as flat numpy arrays, and where each event starts (one
    more entry than events): slicing them is far cheaper than indexing awkward arrays event
    by event, which cost more than building the tagging inputs."""
    import awkward as ak

    starts = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(columns[fields[0]])))])
    return {k: ak.to_numpy(ak.flatten(columns[k])) for k in fields}, starts


def _fastjet() -> Any:
    try:
        import fastjet
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "jet clustering needs FastJet: pip install 'fastjet>=3.4' (or the project's "
            "'workflow' extra)"
        ) from err
    return fastjet


def _selected(candidates: dict[str, Any], spec: JetSpec) -> tuple[Any, Any]:
    """Which candidates ``spec`` clusters, and each one's weight (1 for CHS, PUPPI's for
    PUPPI); numpy or awkward arrays alike."""
    if spec.inputs == "chs":
        return ~charged_pileup(candidates["charge"], candidates["fromPV"]), np.ones_like(
            candidates["pt"]
        )
    if spec.inputs == "puppi":
        weight = candidates["puppiWeight"]
        return weight > 0, weight
    raise ValueError(f"jet inputs must be 'chs' or 'puppi', not {spec.inputs!r}")


def _sequence(pt: Any, eta: Any, phi: Any, mass: Any, weight: Any, spec: JetSpec) -> Any:
    """FastJet's anti-kt clustering of the weighted four-vectors (one event as numpy arrays,
    or a chunk as awkward ones)."""
    import awkward as ak

    fastjet = _fastjet()
    wpt, mt = weight * pt, np.sqrt(pt**2 + mass**2)
    columns = {"px": wpt * np.cos(phi), "py": wpt * np.sin(phi), "pz": wpt * np.sinh(eta),
               "E": weight * mt * np.cosh(eta)}  # fmt: skip
    # Jagged (a chunk) needs zip; one event's flat columns take the cheaper constructor.
    vectors = ak.zip(columns) if isinstance(pt, ak.Array) else ak.Array(columns)
    return fastjet.ClusterSequence(vectors, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                  spec.radius))  # fmt: skip


def _kinematics(px: Any, py: Any, pz: Any, e: Any) -> tuple[Any, Any, Any, Any]:
    """(pt, eta, phi, mass) of jets from their four-momenta."""
    pt = np.hypot(px, py)
    mass = np.sqrt(np.maximum(e**2 - pt**2 - pz**2, 0.0))
    return pt, np.arcsinh(pz / np.maximum(pt, 1e-9)), np.arctan2(py, px), mass


def cluster(candidates: dict[str, Any], spec: JetSpec = AK4) -> Jets:
    """Cluster each event's candidates (awkward arrays ``pt``, ``eta``, ``phi``, ``mass``,
    plus ``charge`` and ``fromPV`` for CHS, ``puppiWeight`` for PUPPI) into ``spec`` jets."""
    import awkward as ak

    keep, weight = _selected(candidates, spec)
    index = ak.local_index(candidates["pt"], axis=1)[keep]
    kept = (candidates[k][keep] for k in ("pt", "eta", "phi", "mass"))
    sequence = _sequence(*kept, weight[keep], spec)
    raw = sequence.inclusive_jets(min_pt=spec.min_pt)
    members = sequence.constituent_index(min_pt=spec.min_pt)
    jet_pt, jet_eta, jet_phi, jet_mass = _kinematics(raw.px, raw.py, raw.pz, raw.E)
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

    fields = EVENT_FIELDS + (("puppiWeight",) if spec.inputs == "puppi" else ())
    event = {k: np.asarray(candidates[k], np.float64) for k in fields}
    keep, weight = _selected(event, spec)
    if not keep.any():
        return np.zeros((0, len(JET_COLUMNS)), np.float32)
    sequence = _sequence(*(event[k][keep] for k in ("pt", "eta", "phi", "mass")),
                         weight[keep], spec)  # fmt: skip
    raw = sequence.inclusive_jets(min_pt=spec.min_pt)
    n = ak.to_numpy(ak.num(sequence.constituent_index(min_pt=spec.min_pt), axis=1))
    kinematics = _kinematics(*(ak.to_numpy(raw[k]) for k in ("px", "py", "pz", "E")))
    table = np.stack([*kinematics, n], axis=1)
    table = table[np.argsort(-table[:, 0], kind="stable")]
    return table[np.abs(table[:, 1]) < spec.max_abs_eta].astype(np.float32)
