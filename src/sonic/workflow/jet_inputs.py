"""ParticleNet's inputs for one event's jets, as CMSSW's ParticleNet producers build them.

CMSSW's ``ParticleNetSonicJetTagsProducer`` sends one request per event with
the batch dimension = the event's jets, and six inputs: ``pf_points``
[jets, 2, P], ``pf_features`` [jets, F, P], ``pf_mask`` [jets, 1, P] and the
same three for secondary vertices with S.  Each variable is preprocessed as
its ``preprocess.json`` says: ``clip((x - median) * norm_factor, lower_bound,
upper_bound)``, NaN and inf replaced first, padded positions set to ``pad``.
P and S are "half-ragged": the largest count of any jet in the event,
clamped to the group's ``min_length`` and ``max_length`` (a jet with more
candidates keeps its highest-pT ones).  An event none of whose jets has a
candidate sends nothing.

:data:`AK4_CHS` holds the variable list and preprocessing of CMS's AK4 CHS
ParticleNet (cms-data RecoBTag-Combined ``ParticleNetAK4/CHS/V00``: 20
particle and 11 vertex features, P in 8-50, S in 1-5, eight classes);
:data:`AK8_GENERAL` those of its AK8 ParticleNet (``ParticleNetAK8/General/V01``:
25 particle and 11 vertex features, P in 16-100, S in 1-10, twenty classes).

Candidate features follow CMSSW's definitions (``etarel`` signed by the jet's
eta, ``phirel`` by deltaPhi, the track-to-jet "btag" variables of the
candidate's track against the jet axis).  What the emulated file does not
carry takes the value of a typical good track: ``normchi2`` 1, ``quality`` 7
(loose, tight and high purity), ``lostInnerHits`` 0; neutrals take CMSSW's
values for a candidate without a track (``normchi2`` 999, the rest 0).
``VTX_ass`` maps ``fromPV`` onto PackedCandidate's pvAssociationQuality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sonic.workflow.detector import sigma_d0, sigma_dz
from sonic.workflow.jets import Jets, flatten_events

INPUT_NAMES = ("pf_points", "pf_features", "pf_mask", "sv_points", "sv_features", "sv_mask")
OUTPUT_NAME = "softmax"
#: Output classes of CMS's AK4 ParticleNet, in its softmax order.
AK4_LABELS = ("b", "bb", "c", "cc", "uds", "g", "undef", "pu")
#: PackedCandidate pvAssociationQuality for each fromPV value (UsedInFitTight,
#: UsedInFitLoose, CompatibilityDz, OtherDeltaZ).
VTX_ASS = {3: 7, 2: 6, 1: 5, 0: 1}
#: CMSSW's normchi2 for a candidate without a track.
NO_TRACK_CHI2 = 999.0
UNBOUNDED = 1e32


@dataclass(frozen=True, slots=True)
class Var:
    """One variable's preprocessing (a ``var_infos`` entry)."""

    name: str
    median: float = 0.0
    norm: float = 1.0
    lower: float = -5.0
    upper: float = 5.0
    pad: float = 0.0
    replace_inf: float = 0.0


def _free(name: str) -> Var:
    """A variable passed through unscaled and unclipped (points, masks, charge)."""
    return Var(name, lower=-UNBOUNDED, upper=UNBOUNDED)


@dataclass(frozen=True, slots=True)
class Group:
    """One input tensor: its variables in order, and its length range."""

    name: str
    variables: tuple[Var, ...]
    min_length: int
    max_length: int

    def transform(self, values: dict[str, np.ndarray], jet: np.ndarray, position: np.ndarray,
                  n_jets: int, length: int) -> np.ndarray:  # fmt: skip
        """[n_jets, n_vars, length]: each variable preprocessed and put at its (jet, position),
        the rest padded; entries at a position past ``length`` are cut."""
        out = np.empty((n_jets, len(self.variables), length), dtype=np.float32)
        keep = position < length
        jet, position = jet[keep], position[keep]
        for row, v in enumerate(self.variables):
            x = np.asarray(values[v.name], dtype=np.float64)[keep]
            x = np.where(np.isfinite(x), x, v.replace_inf)
            out[:, row, :] = v.pad
            out[jet, row, position] = np.clip((x - v.median) * v.norm, v.lower, v.upper)
        return out

    def length(self, counts: np.ndarray) -> int:
        return int(np.clip(counts.max(initial=0), self.min_length, self.max_length))


@dataclass(frozen=True, slots=True)
class TaggerSpec:
    """A ParticleNet model's interface: its six input groups and its classes."""

    name: str
    jet_radius: float
    groups: tuple[Group, ...]
    labels: tuple[str, ...]

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)


_PF_LEN, _SV_LEN = (8, 50), (1, 5)
JetAxis = tuple[float, float, float]  # pt, eta, phi
# fmt: off
AK4_CHS = TaggerSpec(
    "particlenet_ak4",
    0.4,
    (
        Group("pf_points", (_free("pfcand_etarel"), _free("pfcand_phirel")), *_PF_LEN),
        Group("pf_features", (
            Var("pfcand_pt_log_nopuppi", 0.8, 0.7), Var("pfcand_e_log_nopuppi", 1.2, 0.6),
            _free("pfcand_etarel"), _free("pfcand_phirel"), Var("pfcand_abseta", 0.8, 1.2),
            _free("pfcand_charge"), Var("pfcand_VTX_ass", 4.0, 0.3),
            _free("pfcand_lostInnerHits"), Var("pfcand_normchi2", 5.0, 0.2),
            Var("pfcand_quality", 0.0, 0.2), Var("pfcand_dz", 0.0, 150.0),
            Var("pfcand_dzsig", 0.0, 0.7), Var("pfcand_dxy", 0.0, 270.0),
            Var("pfcand_dxysig", 1.1, 1.0), Var("pfcand_btagEtaRel", 2.1, 0.5),
            Var("pfcand_btagPtRatio"), Var("pfcand_btagPParRatio"),
            Var("pfcand_btagSip3dVal", 0.0, 90.0), Var("pfcand_btagSip3dSig", 0.0, 0.5),
            Var("pfcand_btagJetDistVal", 0.0, 50.0),
        ), *_PF_LEN),
        Group("pf_mask", (_free("pfcand_mask"),), *_PF_LEN),
        Group("sv_points", (_free("sv_etarel"), _free("sv_phirel")), *_SV_LEN),
        Group("sv_features", (
            Var("sv_pt_log", 2.8, 0.8), Var("sv_mass", 1.1, 0.6), _free("sv_etarel"),
            _free("sv_phirel"), Var("sv_abseta", 0.8, 1.2), Var("sv_ntracks", 3.0, 0.5),
            Var("sv_normchi2", 0.7, 0.7), Var("sv_dxy", 0.2, 0.6), Var("sv_dxysig", 5.0, 0.03),
            Var("sv_d3d", 0.35, 0.4), Var("sv_d3dsig", 5.0, 0.03),
        ), *_SV_LEN),
        Group("sv_mask", (_free("sv_mask"),), *_SV_LEN),
    ),
    AK4_LABELS,
)
#: Output classes of CMS's AK8 ParticleNet (General V01), in its softmax order.
AK8_LABELS = ("Top_bcq", "Top_bqq", "Top_bc", "Top_bq", "Top_bele", "Top_bmu", "Top_btau",
              "W_cq", "W_qq", "Z_bb", "Z_cc", "Z_qq", "H_bb", "H_cc", "H_qqqq", "QCD_bb",
              "QCD_cc", "QCD_b", "QCD_c", "QCD_others")
_AK8_PF_LEN, _AK8_SV_LEN = (16, 100), (1, 10)
_FLAGS = tuple(_free(f"pfcand_is{k}") for k in ("El", "Mu", "Gamma", "ChargedHad", "NeutralHad"))
AK8_GENERAL = TaggerSpec(
    "particlenet_ak8",
    0.8,
    (
        Group("pf_points", (_free("pfcand_etarel"), _free("pfcand_phirel")), *_AK8_PF_LEN),
        Group("pf_features", (
            Var("pfcand_pt_log_nopuppi", 1.0, 0.5), Var("pfcand_e_log_nopuppi", 1.3, 0.5),
            _free("pfcand_etarel"), _free("pfcand_phirel"), Var("pfcand_abseta", 0.6, 1.6),
            _free("pfcand_charge"), *_FLAGS, Var("pfcand_VTX_ass", 4.0, 0.3),
            _free("pfcand_lostInnerHits"), Var("pfcand_normchi2", 5.0, 0.2),
            Var("pfcand_quality", 0.0, 0.2), Var("pfcand_dz", 0.0, 180.0),
            Var("pfcand_dzsig", 0.0, 0.9), Var("pfcand_dxy", 0.0, 300.0),
            Var("pfcand_dxysig", 0.0, 1.0), Var("pfcand_btagEtaRel", 1.5, 0.5),
            Var("pfcand_btagPtRatio"), Var("pfcand_btagPParRatio"),
            Var("pfcand_btagSip3dVal", 0.0, 100.0), Var("pfcand_btagSip3dSig", 0.0, 0.5),
            Var("pfcand_btagJetDistVal", 0.0, 40.0),
        ), *_AK8_PF_LEN),
        Group("pf_mask", (_free("pfcand_mask"),), *_AK8_PF_LEN),
        Group("sv_points", (_free("sv_etarel"), _free("sv_phirel")), *_AK8_SV_LEN),
        Group("sv_features", (
            Var("sv_pt_log", 4.0, 0.6), Var("sv_mass", 1.2, 0.3), _free("sv_etarel"),
            _free("sv_phirel"), Var("sv_abseta", 0.5, 1.6), Var("sv_ntracks", 3.0, 1.0),
            Var("sv_normchi2", 0.8, 0.6), Var("sv_dxy", 0.4, 0.25), Var("sv_dxysig", 7.0, 0.02),
            Var("sv_d3d", 0.5, 0.2), Var("sv_d3dsig", 7.0, 0.02),
        ), *_AK8_SV_LEN),
        Group("sv_mask", (_free("sv_mask"),), *_AK8_SV_LEN),
    ),
    AK8_LABELS,
)
# fmt: on
#: Candidate branches the features need (``PFCands_*``).
PF_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pdgId", "d0", "dz", "fromPV")
#: Secondary-vertex branches (``SV_*``, NanoAOD's names), when the file has them.
SV_FIELDS = ("pt", "eta", "phi", "mass", "ntracks", "chi2", "dxy", "dxySig", "dlen", "dlenSig")


def _delta_phi(a: np.ndarray, b: float) -> np.ndarray:
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def _unit(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit 3-vectors [n, 3] of the directions (pt, eta, phi)."""
    v = np.stack([np.cos(phi), np.sin(phi), np.sinh(eta)], axis=-1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _eta_sign(jet_eta: np.ndarray) -> np.ndarray:
    """CMSSW's sign of etarel: +1 for a jet at positive eta, else -1."""
    return np.where(jet_eta > 0, 1.0, -1.0)


def candidate_features(pf: dict[str, np.ndarray], jet: np.ndarray) -> dict[str, np.ndarray]:
    """Every pfcand_* variable of jet constituents: ``pf`` holds the constituents (of one or
    several jets), ``jet`` each one's jet axis (pt, eta, phi), shape [n, 3]."""
    jet_eta, jet_phi = jet[:, 1], jet[:, 2]
    pt, eta, phi, mass = (pf[k].astype(np.float64) for k in ("pt", "eta", "phi", "mass"))
    charged = pf["charge"] != 0
    apdg = np.abs(pf["pdgId"])
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    d0, dz = pf["d0"].astype(np.float64), pf["dz"].astype(np.float64)
    # The track against the jet axis: momentum parallel and perpendicular to it, the
    # signed 3D impact parameter, and the distance of closest approach to the axis.
    p = pt * np.cosh(eta)
    axis = _unit(jet[:, 0], jet_eta, jet_phi)
    direction = _unit(pt, eta, phi)
    p_par = p * np.einsum("ij,ij->i", direction, axis)
    normal = np.cross(direction, axis)
    norm = np.linalg.norm(normal, axis=1)
    p_perp = p * norm
    pca = np.stack([-d0 * np.sin(phi), d0 * np.cos(phi), dz], axis=1)  # from the PV, in cm
    ip3d = np.linalg.norm(pca, axis=1) * np.where(np.einsum("ij,ij->i", pca, axis) >= 0, 1.0, -1.0)
    ip3d_err = np.hypot(sigma_d0(pt), sigma_dz(pt))
    jet_dist = -np.abs(np.einsum("ij,ij->i", pca, normal)) / np.where(norm > 0, norm, 1.0)
    vtx_ass = np.zeros(len(pt))
    for from_pv, quality in VTX_ASS.items():
        vtx_ass[pf["fromPV"] == from_pv] = quality
    track = lambda values, empty=0.0: np.where(charged, values, empty)  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        eta_rel = 0.5 * np.log((p + p_par) / (p - p_par))
        return {
            "pfcand_pt_log_nopuppi": np.log(pt),
            "pfcand_e_log_nopuppi": np.log(energy),
            "pfcand_etarel": _eta_sign(jet_eta) * (eta - jet_eta),
            "pfcand_phirel": _delta_phi(phi, jet_phi),
            "pfcand_abseta": np.abs(eta),
            "pfcand_charge": pf["charge"].astype(np.float64),
            "pfcand_isEl": (apdg == 11).astype(np.float64),
            "pfcand_isMu": (apdg == 13).astype(np.float64),
            "pfcand_isGamma": (apdg == 22).astype(np.float64),
            "pfcand_isChargedHad": (apdg == 211).astype(np.float64),
            "pfcand_isNeutralHad": (apdg == 130).astype(np.float64),
            "pfcand_VTX_ass": track(vtx_ass),
            "pfcand_lostInnerHits": np.zeros(len(pt)),
            "pfcand_normchi2": track(1.0, NO_TRACK_CHI2),
            "pfcand_quality": track(7.0),
            "pfcand_dz": track(dz),
            "pfcand_dzsig": track(dz / sigma_dz(pt)),
            "pfcand_dxy": track(d0),
            "pfcand_dxysig": track(d0 / sigma_d0(pt)),
            "pfcand_btagEtaRel": track(eta_rel),
            "pfcand_btagPtRatio": track(p_perp / p),
            "pfcand_btagPParRatio": track(p_par / p),
            "pfcand_btagSip3dVal": track(ip3d),
            "pfcand_btagSip3dSig": track(ip3d / ip3d_err),
            "pfcand_btagJetDistVal": track(jet_dist),
            "pfcand_mask": np.ones(len(pt)),
        }


def vertex_features(sv: dict[str, np.ndarray], jet: np.ndarray) -> dict[str, np.ndarray]:
    """Every sv_* variable of jets' secondary vertices: ``sv`` holds the vertices, ``jet``
    each one's jet axis (pt, eta, phi), shape [n, 3]."""
    jet_eta, jet_phi = jet[:, 1], jet[:, 2]
    eta = sv["eta"].astype(np.float64)
    with np.errstate(divide="ignore"):
        return {
            "sv_pt_log": np.log(sv["pt"].astype(np.float64)), "sv_mass": sv["mass"],
            "sv_etarel": _eta_sign(jet_eta) * (eta - jet_eta),
            "sv_phirel": _delta_phi(sv["phi"].astype(np.float64), jet_phi),
            "sv_abseta": np.abs(eta), "sv_ntracks": sv["ntracks"], "sv_normchi2": sv["chi2"],
            "sv_dxy": sv["dxy"], "sv_dxysig": sv["dxySig"], "sv_d3d": sv["dlen"],
            "sv_d3dsig": sv["dlenSig"], "sv_mask": np.ones(len(eta)),
        }  # fmt: skip


def _positions(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of ``counts`` entries."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum())) - starts


def _jet_vertices(sv: dict[str, np.ndarray] | None, axes: np.ndarray,
                  radius: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(vertex index, jet index) of each vertex within ``radius`` of each jet axis, each
    jet's by decreasing dxy significance (the order CMSSW's tag-info producer sorts them in)."""
    if sv is None or len(sv["pt"]) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    deta = sv["eta"][:, None] - axes[None, :, 1]
    dphi = _delta_phi(sv["phi"].astype(np.float64)[:, None], axes[None, :, 2])
    vertex, jet = np.nonzero(deta**2 + dphi**2 < radius * radius)
    order = np.lexsort((-np.asarray(sv["dxySig"])[vertex], jet))
    return vertex[order], jet[order]


def event_inputs(pf: dict[str, np.ndarray], jets: list[tuple[JetAxis, np.ndarray]],
                 sv: dict[str, np.ndarray] | None = None,
                 spec: TaggerSpec = AK4_CHS) -> dict[str, np.ndarray] | None:  # fmt: skip
    """The six tensors for one event, batch = its jets; None when no jet has a candidate.

    ``jets``: ((pt, eta, phi), constituent indices into ``pf``, highest pT first) per jet.
    All jets' constituents are computed at once, then placed at (jet, position).
    """
    if not jets or all(len(members) == 0 for _, members in jets):
        return None
    axes = np.array([axis for axis, _ in jets], dtype=np.float64).reshape(-1, 3)
    n_pf = np.array([len(m) for _, m in jets])
    pf_jet = np.repeat(np.arange(len(jets)), n_pf)
    members = np.concatenate([np.asarray(m, dtype=np.int64) for _, m in jets])
    pf_rows = candidate_features({k: np.asarray(pf[k])[members] for k in PF_FIELDS},
                                 axes[pf_jet])  # fmt: skip
    vertex, sv_jet = _jet_vertices(sv, axes, spec.jet_radius)
    sv_rows = vertex_features({k: np.asarray(sv[k])[vertex] for k in SV_FIELDS}
                              if sv is not None else {k: np.zeros(0) for k in SV_FIELDS},
                              axes[sv_jet])  # fmt: skip
    n_sv = np.bincount(sv_jet, minlength=len(jets))
    placed = {"pf": (pf_rows, pf_jet, _positions(n_pf), n_pf),
              "sv": (sv_rows, sv_jet, _positions(n_sv), n_sv)}
    out = {}
    for group in spec.groups:
        rows, jet, position, counts = placed[group.name.split("_")[0]]
        out[group.name] = group.transform(rows, jet, position, len(jets), group.length(counts))
    return out


def chunk_inputs(pf: dict[str, Any], jets: Jets, sv: dict[str, Any] | None = None,
                 spec: TaggerSpec = AK4_CHS) -> list[dict[str, np.ndarray] | None]:  # fmt: skip
    """:func:`event_inputs` for each event of a chunk (awkward candidates, clustered jets),
    each event sliced out of the chunk's flat arrays."""
    pf_flat, pf_starts = flatten_events(pf, PF_FIELDS)
    sv_flat, sv_starts = flatten_events(sv, SV_FIELDS) if sv is not None else ({}, None)
    out = []
    for ev, event_jets in enumerate(jets.per_event()):
        lo, hi = pf_starts[ev], pf_starts[ev + 1]
        event_pf = {k: v[lo:hi] for k, v in pf_flat.items()}
        event_sv = ({k: v[sv_starts[ev]:sv_starts[ev + 1]] for k, v in sv_flat.items()}
                    if sv_starts is not None else None)  # fmt: skip
        out.append(event_inputs(event_pf, event_jets, event_sv, spec))
    return out
