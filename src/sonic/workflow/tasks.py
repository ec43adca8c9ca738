"""The workflow's tasks: what each reads from the file, sends to its model and writes.

A task turns a chunk of events into requests and the answers into output
columns, the way its CMSSW producer does:

- ``deepmet`` (``DeepMETSonicProducer``): one request per chunk, batch =
  events, each event's candidates padded to 4500; writes NanoAOD's
  ``DeepMETResolutionTune_pt/phi`` per event, beside the file's MET columns;
  ``deepmet_response`` asks for the response tune (version 2) and writes
  ``DeepMETResponseTune_pt/phi``.
- ``particlenet`` (``ParticleNetSonicJetTagsProducer``): AK4 jets clustered
  from the candidates; one request per event, batch = its jets, never one for
  an event without jets; writes the ``Jet`` collection (pT, eta, phi, mass and
  the eight class probabilities, ``Jet_pnet_<class>``).
- ``particlenet_ak8``: the same for AK8 jets and CMS's AK8 ParticleNet (twenty
  classes, top tagging); writes ``FatJet``.
- ``clustering``: the AK4 jet clustering itself, a step with no network,
  served as a python-backend model (``ak4_clustering``): one request per event
  with its candidates; writes ``AK4Jet`` (pT, eta, phi, mass, constituents).

:mod:`sonic.workflow.runner` runs any list of them over the same chunks, each
through its own engine (in-process onnxruntime, or a client of the servers),
as a CMSSW job offloads several models.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonic.workflow.deepmet import TUNE_VERSIONS
from sonic.workflow.inputs import INPUT_NAMES as DEEPMET_INPUTS
from sonic.workflow.inputs import MAX_N_PF, NORM_FACTOR, PF_BRANCHES, build_inputs
from sonic.workflow.inputs import OUTPUT_NAME as DEEPMET_OUTPUT
from sonic.workflow.jet_inputs import OUTPUT_NAME as TAGGER_OUTPUT

EVENT_BRANCHES = ("run", "luminosityBlock", "event")
#: MET columns copied to the output when the file has them.
MET_BRANCHES = ("GenMET_pt", "GenMET_phi", "RawPFMET_pt", "RawPFMET_phi", "PuppiMET_pt",
                "PuppiMET_phi", "Pileup_nPU", "GenProcess_id")  # fmt: skip


@dataclass(slots=True)
class Prepared:
    """One chunk's requests, and what the task needs to turn their answers into columns."""

    requests: list[dict[str, np.ndarray]]
    state: Any


class Task:
    """The interface every task implements (see the module docstring)."""

    name = ""
    #: The model's name on the servers and in a repository, and the version asked for ("": the
    #: servers' choice; direct mode then runs version 1).
    model_name = ""
    model_version = ""
    output = ""
    #: Branches the task needs, and those it reads when the file has them.
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    #: Direct mode runs :meth:`compute` in the job (a step with no model file) instead of
    #: the model's ONNX file.
    local = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Task:
        """The task with the job's options it takes (only DeepMET takes any)."""
        return cls()

    def prepare(self, arrays: dict[str, Any]) -> Prepared:
        raise NotImplementedError

    def compute(self, request: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def columns(self, arrays: dict[str, Any], prepared: Prepared,
                outputs: list[np.ndarray]) -> dict[str, Any]:  # fmt: skip
        """Output columns, one entry per event (numpy, or awkward for collections)."""
        raise NotImplementedError


class DeepMET(Task):
    name = "deepmet"
    model_name = "deepmet"
    #: As CMS's model directory: version 1 the resolution tune, version 2 the response tune.
    model_version = TUNE_VERSIONS["resolution"]
    #: NanoAOD's name of the MET it writes (``_pt``, ``_phi``).
    met_name = "DeepMETResolutionTune"
    output = DEEPMET_OUTPUT
    required = tuple(f"PFCands_{b}" for b in PF_BRANCHES)
    optional = MET_BRANCHES

    def __init__(self, max_n_pf: int = MAX_N_PF, norm_factor: float = NORM_FACTOR,
                 ignore_leptons: bool = False) -> None:  # fmt: skip
        self.max_n_pf = max_n_pf
        self.norm_factor = norm_factor
        self.ignore_leptons = ignore_leptons

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Task:
        return cls(**options)

    def prepare(self, arrays: dict[str, Any]) -> Prepared:
        pf = {b: arrays[f"PFCands_{b}"] for b in PF_BRANCHES}
        inputs = build_inputs(pf, max_n_pf=self.max_n_pf, norm_factor=self.norm_factor,
                              ignore_leptons=self.ignore_leptons)  # fmt: skip
        return Prepared([{k: inputs.tensors[k] for k in DEEPMET_INPUTS}], inputs)

    def columns(self, arrays: dict[str, Any], prepared: Prepared,
                outputs: list[np.ndarray]) -> dict[str, Any]:  # fmt: skip
        import awkward as ak

        inputs = prepared.state
        met = inputs.met(outputs[0], self.norm_factor)
        rows = {k: ak.to_numpy(arrays[k]) for k in self.optional if k in arrays}
        rows[f"{self.met_name}_pt"] = np.hypot(met[:, 0], met[:, 1]).astype(np.float32)
        rows[f"{self.met_name}_phi"] = np.arctan2(met[:, 1], met[:, 0]).astype(np.float32)
        rows["nPFCands_used"] = inputs.n_candidates.astype(np.int32)
        return rows


class DeepMETResponse(DeepMET):
    """DeepMET's response tune (version 2 of the same model, as CMS ships it)."""

    name = "deepmet_response"
    model_version = TUNE_VERSIONS["response"]
    met_name = "DeepMETResponseTune"


class ParticleNet(Task):
    """Jet tagging: AK4 flavour (``particlenet``) or AK8 top tagging (``particlenet_ak8``)."""

    name = "particlenet"
    output = TAGGER_OUTPUT
    #: The tagger (sonic.workflow.particlenet.TAGGERS: its jets, inputs and model name) and
    #: the collection it writes.
    tagger = "ak4"
    collection = "Jet"

    def __init__(self) -> None:
        from sonic.workflow.jet_inputs import PF_FIELDS, SV_FIELDS
        from sonic.workflow.particlenet import TAGGERS

        tagger = TAGGERS[self.tagger]
        self.spec, self.jets, self.model_name = tagger.inputs, tagger.jets, tagger.model_name
        self.required = tuple(f"PFCands_{b}" for b in (*PF_FIELDS, "puppiWeight"))
        self.optional = tuple(f"SV_{b}" for b in SV_FIELDS)

    def prepare(self, arrays: dict[str, Any]) -> Prepared:
        from sonic.workflow.jet_inputs import PF_FIELDS, SV_FIELDS, chunk_inputs
        from sonic.workflow.jets import cluster

        pf = {b[len("PFCands_"):]: arrays[b] for b in self.required}
        jets = cluster(pf, self.jets)
        sv = ({k: arrays[f"SV_{k}"] for k in SV_FIELDS}
              if all(f"SV_{k}" in arrays for k in SV_FIELDS) else None)  # fmt: skip
        per_event = chunk_inputs({k: pf[k] for k in PF_FIELDS}, jets, sv, self.spec)
        return Prepared([x for x in per_event if x is not None], (jets, per_event))

    def columns(self, arrays: dict[str, Any], prepared: Prepared,
                outputs: list[np.ndarray]) -> dict[str, Any]:  # fmt: skip
        import awkward as ak

        jets, per_event = prepared.state
        counts = jets.counts()
        answers = iter(outputs)
        n_classes = len(self.spec.labels)
        probs = [next(answers) if x is not None else np.zeros((0, n_classes), np.float32)
                 for x in per_event]  # fmt: skip
        flat = np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)
        fields = {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass}
        fields = {k: ak.values_astype(v, np.float32) for k, v in fields.items()}
        for i, label in enumerate(self.spec.labels):
            fields[f"pnet_{label}"] = ak.unflatten(flat[:, i].astype(np.float32), counts)
        return {self.collection: ak.zip(fields)}


class ParticleNetAK8(ParticleNet):
    name = "particlenet_ak8"
    tagger = "ak8"
    collection = "FatJet"


class Clustering(Task):
    """AK4 jet clustering, a step with no network, offloaded as the models are: one request
    per event with its candidates; direct, the job clusters them itself (:attr:`local`)."""

    name = "clustering"
    model_name = "ak4_clustering"
    output = "jets"
    local = True

    def __init__(self) -> None:
        from sonic.workflow.jets import EVENT_FIELDS

        self.fields = EVENT_FIELDS
        self.required = tuple(f"PFCands_{k}" for k in EVENT_FIELDS)

    def prepare(self, arrays: dict[str, Any]) -> Prepared:
        from sonic.workflow.jets import flatten_events

        flat, bounds = flatten_events({k: arrays[f"PFCands_{k}"] for k in self.fields},
                                      self.fields)  # fmt: skip
        dtypes = {"charge": np.int32, "fromPV": np.int32}
        requests = [{f"pf_{k}": v[lo:hi].astype(dtypes.get(k, np.float32))
                     for k, v in flat.items()} for lo, hi in itertools.pairwise(bounds)]
        return Prepared(requests, len(bounds) - 1)

    def compute(self, request: dict[str, np.ndarray]) -> np.ndarray:
        """What the served model computes, in the job (direct mode)."""
        from sonic.workflow.jets import AK4, cluster_event

        return cluster_event({k: request[f"pf_{k}"] for k in self.fields}, AK4)

    def columns(self, arrays: dict[str, Any], prepared: Prepared,
                outputs: list[np.ndarray]) -> dict[str, Any]:  # fmt: skip
        import awkward as ak

        from sonic.workflow.jets import JET_COLUMNS

        counts = [len(o) for o in outputs]
        flat = np.concatenate(outputs) if outputs else np.zeros((0, len(JET_COLUMNS)))
        fields = {k: ak.unflatten(flat[:, i], counts) for i, k in enumerate(JET_COLUMNS)}
        fields["nConstituents"] = ak.values_astype(fields["nConstituents"], np.int32)
        return {"AK4Jet": ak.zip(fields)}


TASKS: dict[str, type[Task]] = {t.name: t for t in (DeepMET, DeepMETResponse, ParticleNet,
                                                    ParticleNetAK8, Clustering)}


def make_task(name: str, **options: Any) -> Task:
    """The task by name; ``options`` reach the tasks that take them (DeepMET's)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name].from_options(options)
