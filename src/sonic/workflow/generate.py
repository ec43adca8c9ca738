"""``sonic sample``: Pythia 8 collisions with pileup, through the detector, into a ROOT file.

Processes at 13.6 TeV: ``ttbar`` (gg/qqbar -> ttbar), ``znunu`` (Z -> nu nu
plus a jet, pT-hat > 50 GeV), ``zmumu`` (Drell-Yan Z -> mu mu, 60-120 GeV) and
``qcd`` (multijet, pT-hat > 30 GeV), ``ttbar_boosted`` / ``qcd_boosted``
(pT-hat > 400 GeV, for AK8 tagging), and ``znunu_highpt`` / ``zmumu_highpt`` /
``zmumu_midpt`` (Z plus a jet, pT-hat > 160 / 70 / 30 GeV, for MET performance at q_T
the inclusive samples barely fill); a sample holds ``ttbar`` and ``znunu``
unless told otherwise.  Several processes alternate event by event,
so any chunk of the file mixes them.  Pileup is a Poisson number (mean
``pileup``) of minimum-bias collisions overlaid on each event.  They are drawn
from a pool of pre-generated minimum-bias events (as CMS premixing draws from
a library), each turned by a random angle about the beam and placed at its
own z in the beam spot, so a large pileup costs no extra generation.

The file follows NanoAOD's naming: jagged ``PFCands_*`` branches with the
``nPFCands`` counter, ``GenMET_pt/phi`` from the neutrinos of the hard
collision, ``RawPFMET_pt/phi`` and ``PuppiMET_pt/phi`` from the candidates,
``run``/``luminosityBlock``/``event``, ``Pileup_nPU`` and ``PV_z``.  Some
branches are this project's own: ``GenProcess_id`` (index into ``HARD_PROCESSES``),
``PFCands_isPU`` (the candidate's truth: from a pileup collision), ``GenPart_kind``
(what a stored generator particle is, for jet labels).  Secondary vertices (``SV_*``)
come from :mod:`sonic.workflow.vertexing`.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonic.workflow.detector import BEAM_SPOT_SIGMA_Z, NEUTRINOS, Candidates, Particles, reconstruct
from sonic.workflow.vertexing import SV_FIELDS, secondary_vertices

ECM_GEV = 13600.0
PROCESSES: dict[str, list[str]] = {
    "ttbar": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"],
    "znunu": [
        "WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 12 14 16",
        "PhaseSpace:pTHatMin = 50.",
    ],
    # Drell-Yan Z -> mu mu, inclusive in the Z's pT (hadronic recoil studies).
    "zmumu": [
        "WeakSingleBoson:ffbar2gmZ = on", "WeakZ0:gmZmode = 2", "23:onMode = off",
        "23:onIfAny = 13", "PhaseSpace:mHatMin = 60.", "PhaseSpace:mHatMax = 120.",
    ],
    # QCD multijet: light-quark and gluon jets.
    "qcd": ["HardQCD:all = on", "PhaseSpace:pTHatMin = 30."],
    # Boosted: tops above ~400 GeV decay inside one AK8 jet (2 m / pT < 0.8); QCD alike.
    "ttbar_boosted": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "PhaseSpace:pTHatMin = 400."],
    "qcd_boosted": ["HardQCD:all = on", "PhaseSpace:pTHatMin = 400."],
    # High q_T: the Z recoiling against a parton, for the MET-performance bins an inclusive
    # sample barely fills (its q_T bins start well above pT-hat's cut: no turn-on inside them).
    "znunu_highpt": [
        "WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 12 14 16",
        "PhaseSpace:pTHatMin = 160.",
    ],
    "zmumu_highpt": [
        "WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 13",
        "PhaseSpace:pTHatMin = 70.",
    ],
    # The Z->mumu recoil at q_T 50-100 GeV: the inclusive sample has 4% of its events there.
    "zmumu_midpt": [
        "WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 13",
        "PhaseSpace:pTHatMin = 30.",
    ],
    # Pileup: all inelastic collisions, diffractive ones included, as CMS's premixing library.
    "minbias": ["SoftQCD:inelastic = on"],
}
HARD_PROCESSES = ("ttbar", "znunu", "zmumu", "qcd", "ttbar_boosted", "qcd_boosted",
                  "znunu_highpt", "zmumu_highpt", "zmumu_midpt")
#: What a sample holds when no process is named: DeepMET's demo mix.
DEFAULT_PROCESSES = ("ttbar", "znunu")
#: Run 3: a mean of 55 pileup collisions, drawn from a pool of this many minimum-bias events
#: (each reused about 55 x events / pool times, at its own angle and z).
DEFAULT_PILEUP = 55.0
DEFAULT_POOL_SIZE = 2000
#: Bumped whenever the same options give other events (caches of samples name it): 3 is the
#: detector with non-compensation, PF confusion and loopers, the vertex fit and CMS's PUPPI;
#: 4 gives fromPV as pat::PackedCandidate does (NoPV only for tracks in another vertex's fit);
#: 5 the forward calorimeter's own, uncalibrated hadron response; 6 tracks that bend on their
#: way to the calorimeters, PF's blocks taking photons within three ECAL crystals of a track's
#: impact and giving a block's excess back as photons first, and CMS's tracking by |eta|.
SAMPLE_VERSION = 6
#: Pythia's seeds must be below 900 000 000.
_SEED_RANGE = 900_000_000


def _pythia(process: str, seed: int) -> object:
    try:
        import pythia8mc
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "event generation needs Pythia 8: pip install 'pythia8mc==8.317.2' "
            "(or the project's 'workflow' extra)"
        ) from err
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
    py = pythia8mc.Pythia("", False)
    for cmd in [f"Beams:eCM = {ECM_GEV}", "Next:numberCount = 0", "Print:quiet = on",
                "Random:setSeed = on", f"Random:seed = {seed % _SEED_RANGE + 1}",
                *PROCESSES[process]]:  # fmt: skip
        py.readString(cmd)
    if not py.init():
        raise RuntimeError(f"Pythia failed to initialise process {process!r}")
    return py


def _final_state(py: object) -> tuple[Particles, float, float]:
    """Visible and invisible final-state particles of Pythia's current event, and GenMET."""
    rows = [
        (q.id(), q.charge(), q.px(), q.py(), q.pz(), q.xProd(), q.yProd(), q.zProd())
        for q in py.event  # type: ignore[attr-defined]
        if q.isFinal()
    ]
    a = np.array(rows, dtype=np.float64).reshape(-1, 8)
    pdg = a[:, 0].astype(np.int32)
    # Pythia's vertices are in mm; CMS's impact parameters are in cm.
    parts = Particles(pdg, a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5] / 10, a[:, 6] / 10,
                      a[:, 7] / 10)  # fmt: skip
    nu = np.isin(np.abs(pdg), NEUTRINOS)
    return parts, -0.0 + parts.px[nu].sum(), parts.py[nu].sum()


#: ``GenPart_kind``: what a stored generator particle is, for jet flavour labels.
HEAVY_HADRON, HARD_PARTON, TOP_QUARK, SHOWER_PARTON, HARD_LEPTON = 1, 2, 3, 4, 5
#: Partons at the end of the shower are kept above this pT (GeV): enough to give every jet
#: CMS's parton flavour (about ten per QCD event).
SHOWER_PARTON_MIN_PT = 5.0
GEN_FIELDS = ("pdgId", "kind", "pt", "eta", "phi")


def _quark_digits(apdg: int) -> tuple[int, int, int]:
    """The quark digits of a hadron's PDG id (meson: 0 q1 q2, baryon: q1 q2 q3)."""
    return (apdg // 1000) % 10, (apdg // 100) % 10, (apdg // 10) % 10


def _heavy_flavour(pdg: int) -> int:
    """5 for a hadron with a b quark, 4 for one with a c quark (and no b), else 0."""
    apdg = abs(pdg) % 10000
    if apdg < 100:
        return 0
    digits = _quark_digits(apdg)
    return 5 if 5 in digits else 4 if 4 in digits else 0


def _truth(py: object) -> dict[str, np.ndarray]:
    """The generator particles jet labels need: weakly decaying b and c hadrons (CMS's
    hadron flavour ghost-associates them), the hard process's outgoing partons and the
    partons that end the shower (parton flavour), the last copy of each top quark and the
    hard process's charged leptons (AK8 top labels)."""
    event = py.event  # type: ignore[attr-defined]
    rows = []
    for q in event:
        apdg = q.idAbs()
        flavour = _heavy_flavour(q.id())
        kind = 0
        if flavour and not any(_heavy_flavour(event[d].id()) == flavour
                               for d in q.daughterList()):  # fmt: skip
            kind = HEAVY_HADRON
        elif q.status() == -23 and (apdg <= 5 or apdg == 21):
            kind = HARD_PARTON
        elif abs(q.status()) == 23 and apdg in (11, 13, 15):
            kind = HARD_LEPTON  # from a W, a top's leptonic decay
        elif apdg == 6 and all(event[d].idAbs() != 6 for d in q.daughterList()):
            kind = TOP_QUARK
        elif (71 <= abs(q.status()) <= 79 and (apdg <= 5 or apdg == 21)
              and q.pT() > SHOWER_PARTON_MIN_PT):  # fmt: skip
            kind = SHOWER_PARTON
        if kind and q.pT() > 0:
            rows.append((q.id(), kind, q.pT(), q.eta(), q.phi()))
    table = np.array(rows, dtype=np.float64).reshape(-1, len(GEN_FIELDS))
    return {k: table[:, i] for i, k in enumerate(GEN_FIELDS)}


@dataclass(slots=True)
class Event:
    process: int
    candidates: Candidates
    genmet: tuple[float, float]
    n_pu: int
    #: The reconstructed primary vertex's z (cm) and the number of vertices found.
    pv_z: float
    n_pv: int
    #: Generator particles for jet labels (``GenPart_*``), and secondary vertices (``SV_*``).
    truth: dict[str, np.ndarray]
    vertices: dict[str, np.ndarray]


class EventGenerator:
    """Hard collisions with pileup overlaid, reconstructed into PF candidates."""

    def __init__(
        self,
        processes: list[str],
        *,
        pileup: float = DEFAULT_PILEUP,
        pool_size: int = DEFAULT_POOL_SIZE,
        seed: int = 1,
        truth_vertexing: bool = False,
    ) -> None:
        for p in processes:
            if p not in HARD_PROCESSES:
                raise ValueError(f"unknown process {p!r}; choose from {list(HARD_PROCESSES)}")
        if pileup < 0:
            raise ValueError(f"pileup must be >= 0, not {pileup}")
        self.processes = list(processes)
        self.pileup = pileup
        self.truth_vertexing = truth_vertexing
        self.rng = np.random.default_rng(seed)
        self._hard = [_pythia(p, seed + 7919 * i) for i, p in enumerate(self.processes)]
        self._pool: list[Particles] = []
        if pileup > 0:
            mb = _pythia("minbias", seed + 104729)
            while len(self._pool) < max(pool_size, 1):
                if mb.next():  # type: ignore[attr-defined]
                    self._pool.append(_final_state(mb)[0])
        self._count = 0

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        which = self._count % len(self.processes)
        self._count += 1
        py = self._hard[which]
        while not py.next():  # type: ignore[attr-defined]
            pass
        hard, mex, mey = _final_state(py)
        truth = _truth(py)
        n_pu = int(self.rng.poisson(self.pileup)) if self.pileup > 0 else 0
        # Collision 0 is the hard scatter; each pileup collision has its own z in the beam spot.
        z = self.rng.normal(0.0, BEAM_SPOT_SIGMA_Z, 1 + n_pu)
        parts, collision = [hard], [np.zeros(len(hard.pdg), np.int64)]
        for i, idx in enumerate(self.rng.integers(0, len(self._pool), n_pu), start=1):
            overlay = self._pool[int(idx)].rotated(float(self.rng.uniform(-math.pi, math.pi)))
            parts.append(overlay)
            collision.append(np.full(len(overlay.pdg), i))
        reco = reconstruct(Particles.concat(parts), np.concatenate(collision), z, self.rng,
                           self.truth_vertexing)  # fmt: skip
        process = HARD_PROCESSES.index(self.processes[which])
        return Event(process, reco.candidates, (mex, mey), n_pu, reco.vertices.pv_z,
                     reco.vertices.count, truth, secondary_vertices(hard, self.rng))  # fmt: skip


def _met(px: np.ndarray, py: np.ndarray) -> tuple[float, float]:
    mx, my = -float(px.sum()), -float(py.sum())
    return math.hypot(mx, my), math.atan2(my, mx)


def _collection(rows: list[dict[str, np.ndarray]], types: dict[str, type],
                fields: tuple[str, ...]) -> object:  # fmt: skip
    """Per-event column dicts as one jagged record array (float32 unless ``types`` says)."""
    import awkward as ak

    counts = np.array([len(r[fields[0]]) for r in rows], dtype=np.int64)
    flat = {k: np.concatenate([r[k] for r in rows]).astype(types.get(k, np.float32))
            for k in fields}  # fmt: skip
    return ak.unflatten(ak.zip(flat), counts)


def _columns(events: list[Event], first: int, run: int) -> dict[str, object]:
    f32 = np.float32
    cand_types = {"pdgId": np.int32, "charge": np.int32, "fromPV": np.int32, "isPU": np.bool_}
    cand_fields = ("pt", "eta", "phi", "mass", "d0", "dz", "puppiWeight", "pdgId", "charge",
                   "fromPV", "isPU")  # fmt: skip
    pf = _collection([{k: getattr(e.candidates, k) for k in cand_fields} for e in events],
                     cand_types, cand_fields)  # fmt: skip
    gen = _collection([e.truth for e in events], {"pdgId": np.int32, "kind": np.int32},
                      GEN_FIELDS)  # fmt: skip
    sv = _collection([e.vertices for e in events], {"ntracks": np.int32}, SV_FIELDS)
    raw = [_met(e.candidates.px, e.candidates.py) for e in events]
    puppi = [_met(e.candidates.px * e.candidates.puppiWeight,
                  e.candidates.py * e.candidates.puppiWeight) for e in events]  # fmt: skip
    ids = np.arange(first, first + len(events), dtype=np.uint64) + 1
    return {
        "run": np.full(len(events), run, dtype=np.uint32),
        "luminosityBlock": (1 + (ids - 1) // 100).astype(np.uint32),
        "event": ids,
        "PFCands": pf,
        "SV": sv,
        "GenPart": gen,
        "GenMET_pt": np.array([math.hypot(*e.genmet) for e in events], f32),
        "GenMET_phi": np.array([math.atan2(e.genmet[1], e.genmet[0]) for e in events], f32),
        "RawPFMET_pt": np.array([m[0] for m in raw], f32),
        "RawPFMET_phi": np.array([m[1] for m in raw], f32),
        "PuppiMET_pt": np.array([m[0] for m in puppi], f32),
        "PuppiMET_phi": np.array([m[1] for m in puppi], f32),
        "Pileup_nPU": np.array([e.n_pu for e in events], np.int32),
        "PV_z": np.array([e.pv_z for e in events], f32),
        "PV_npvs": np.array([e.n_pv for e in events], np.int32),
        "GenProcess_id": np.array([e.process for e in events], np.int32),
    }


def events_tree(file: Any, columns: dict[str, Any]) -> Any:
    """A new ``Events`` TTree (NanoAOD's container, not uproot's default RNTuple) in an uproot
    file, typed from ``columns``: a collection (an awkward record per event) becomes NanoAOD's
    ``nX`` counter and ``X_field`` branches."""
    return file.mktree("Events", {k: getattr(v, "type", None) or v.dtype
                                  for k, v in columns.items()})  # fmt: skip


def generate_sample(
    path: Path,
    n_events: int,
    *,
    processes: list[str] | None = None,
    pileup: float = DEFAULT_PILEUP,
    seed: int = 1,
    pool_size: int = DEFAULT_POOL_SIZE,
    chunk_size: int = 200,
    progress: Callable[[int], None] | None = None,
    truth_vertexing: bool = False,
) -> Path:
    """Write ``n_events`` reconstructed events to the ROOT file ``path`` (tree ``Events``).

    ``progress`` is called with the number of events done after each chunk;
    ``truth_vertexing``: see :func:`sonic.workflow.detector.reconstruct`.
    """
    import uproot

    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, not {n_events}")
    gen = EventGenerator(processes or list(DEFAULT_PROCESSES), pileup=pileup, pool_size=pool_size,
                         seed=seed, truth_vertexing=truth_vertexing)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    done = 0
    try:
        with uproot.recreate(tmp) as f:
            while done < n_events:
                events = [next(gen) for _ in range(min(chunk_size, n_events - done))]
                cols = _columns(events, done, seed)
                if done == 0:
                    tree = events_tree(f, cols)
                tree.extend(cols)
                done += len(events)
                if progress is not None:
                    progress(done)
        tmp.replace(path)  # a crashed run never leaves a half-written sample behind
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
