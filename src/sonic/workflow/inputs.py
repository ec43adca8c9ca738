"""DeepMET's model inputs, built exactly as CMSSW's ``DeepMETSonicProducer::acquire`` does.

Per event, candidates are taken in collection order (the file's order), with
``ignore_leptons`` first removing electrons and muons and remembering their
px, py; the first ``max_n_pf`` (4500) are kept, the rest dropped; each gives
8 features ``dxy, dz, eta, mass, pt/50, puppiWeight, px/50, py/50`` (the
scaled ones set to 0 when NaN or beyond +-1e6, as ``scale_and_rm_outlier``
does) and three categorical values mapped by ``DeepMETHelp.h``'s tables; the
tensors are zero-padded to ``max_n_pf``.  The network's output times
``norm_factor`` is MET (px, py), minus the removed leptons' px, py.

A charge or pdgId outside the tables is an error naming the event and value
(CMSSW's ``unordered_map::at`` would throw ``std::out_of_range``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_N_PF = 4500
NORM_FACTOR = 50.0
CHARGE_INDEX = {-1: 0, 0: 1, 1: 2}
PDGID_INDEX = {-211: 0, -13: 1, -11: 2, 0: 3, 1: 4, 2: 5, 11: 6, 13: 7, 22: 8, 130: 9, 211: 10}
FEATURES = ("dxy", "dz", "eta", "mass", "pt", "puppiWeight", "px", "py")
#: The NanoAOD branches (after ``PFCands_``) the inputs are built from.
PF_BRANCHES = ("pt", "eta", "phi", "mass", "d0", "dz", "puppiWeight", "pdgId", "charge", "fromPV")
INPUT_NAMES = ("input", "input_cat0", "input_cat1", "input_cat2")
OUTPUT_NAME = "output/BiasAdd"


@dataclass(slots=True)
class DeepMETInputs:
    """One chunk of events: the four model tensors and what MET needs besides."""

    tensors: dict[str, np.ndarray]  # input [n, 4500, 8]; input_cat* [n, 4500, 1]; float32
    n_candidates: np.ndarray  # candidates used per event (after the cap)
    lepton_px: np.ndarray  # removed leptons' sum, 0 unless ignore_leptons
    lepton_py: np.ndarray

    def __len__(self) -> int:
        return len(self.n_candidates)

    def met(self, output: np.ndarray, norm_factor: float = NORM_FACTOR) -> np.ndarray:
        """MET (px, py) per event from the model output ``output/BiasAdd``."""
        met = output.astype(np.float32) * np.float32(norm_factor)
        met[:, 0] -= self.lepton_px
        met[:, 1] -= self.lepton_py
        return met


def scale_and_rm_outlier(values: np.ndarray, scale: float) -> np.ndarray:
    """float32 ``value * scale``; 0 where NaN or beyond +-1e6 (DeepMETHelp.cc)."""
    scaled = values.astype(np.float32) * np.float32(scale)
    bad = np.isnan(scaled) | (scaled > 1e6) | (scaled < -1e6)
    return np.where(bad, np.float32(0), scaled)


def _index(
    values: np.ndarray, table: dict[int, int], what: str, event_of: np.ndarray
) -> np.ndarray:
    lo = min(table)
    lut = np.full(max(table) - lo + 1, -1, dtype=np.int64)
    for k, v in table.items():
        lut[k - lo] = v
    v = values.astype(np.int64)
    inside = (v >= lo) & (v <= max(table))
    out = np.where(inside, lut[np.clip(v - lo, 0, len(lut) - 1)], -1)
    if (bad := np.flatnonzero(out < 0)).size:
        i = bad[0]
        raise ValueError(
            f"event {int(event_of[i])}: {what} {int(values[i])} has no DeepMET embedding "
            f"(known values: {sorted(table)})"
        )
    return out


def build_inputs(
    pf: dict[str, object],
    *,
    max_n_pf: int = MAX_N_PF,
    norm_factor: float = NORM_FACTOR,
    ignore_leptons: bool = False,
) -> DeepMETInputs:
    """The model tensors for a chunk of events.

    ``pf`` maps the names in :data:`PF_BRANCHES` to jagged awkward arrays
    (one list of candidates per event), as read from ``PFCands_*``.
    """
    import awkward as ak

    missing = [b for b in PF_BRANCHES if b not in pf]
    if missing:
        raise KeyError(f"PF candidates lack {missing}; need PFCands_{{{','.join(PF_BRANCHES)}}}")
    cols = {k: ak.Array(pf[k]) for k in PF_BRANCHES}
    n_events = len(cols["pt"])
    px_all = cols["pt"] * np.cos(cols["phi"])
    py_all = cols["pt"] * np.sin(cols["phi"])
    lepton_px = np.zeros(n_events, dtype=np.float32)
    lepton_py = np.zeros(n_events, dtype=np.float32)
    if ignore_leptons:
        lep = (abs(cols["pdgId"]) == 11) | (abs(cols["pdgId"]) == 13)
        lepton_px = ak.to_numpy(ak.sum(px_all[lep], axis=1)).astype(np.float32)
        lepton_py = ak.to_numpy(ak.sum(py_all[lep], axis=1)).astype(np.float32)
        cols = {k: v[~lep] for k, v in cols.items()}
        px_all, py_all = px_all[~lep], py_all[~lep]
    cols = {k: v[:, :max_n_pf] for k, v in cols.items()}
    px_all, py_all = px_all[:, :max_n_pf], py_all[:, :max_n_pf]

    counts = ak.to_numpy(ak.num(cols["pt"])).astype(np.int64)
    event_of = np.repeat(np.arange(n_events), counts)
    slot = np.arange(len(event_of)) - np.repeat(np.cumsum(counts) - counts, counts)

    def flat(a: object) -> np.ndarray:
        return ak.to_numpy(ak.flatten(a))

    scale = 1.0 / norm_factor
    features = np.stack([
        flat(cols["d0"]).astype(np.float32),
        flat(cols["dz"]).astype(np.float32),
        flat(cols["eta"]).astype(np.float32),
        flat(cols["mass"]).astype(np.float32),
        scale_and_rm_outlier(flat(cols["pt"]), scale),
        flat(cols["puppiWeight"]).astype(np.float32),
        scale_and_rm_outlier(flat(px_all), scale),
        scale_and_rm_outlier(flat(py_all), scale),
    ], axis=1)  # fmt: skip
    cats = [
        _index(flat(cols["charge"]), CHARGE_INDEX, "charge", event_of),
        _index(flat(cols["pdgId"]), PDGID_INDEX, "pdgId", event_of),
        flat(cols["fromPV"]).astype(np.int64),
    ]
    tensors = {"input": np.zeros((n_events, max_n_pf, len(FEATURES)), dtype=np.float32)}
    tensors["input"][event_of, slot] = features
    for name, values in zip(INPUT_NAMES[1:], cats, strict=True):
        t = np.zeros((n_events, max_n_pf, 1), dtype=np.float32)
        t[event_of, slot, 0] = values
        tensors[name] = t
    return DeepMETInputs(tensors, counts, lepton_px, lepton_py)
