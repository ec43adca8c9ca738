"""AK4 jet clustering served like a model: a Triton python-backend model that is no network.

One request per event: the event's particle-flow candidates as six inputs of
one variable length (``pf_pt``, ``pf_eta``, ``pf_phi``, ``pf_mass`` FP32,
``pf_charge``, ``pf_fromPV`` INT32); the answer ``jets`` [n_jets, 5] holds
each AK4 CHS jet's pt, eta, phi, mass and constituent count, pT-ordered
(FastJet anti-kt, R = 0.4, charged pileup removed, pT > 15 GeV, |eta| < 2.5:
``sonic.workflow.jets.cluster_event``, the same code the job runs direct).
"""

import triton_python_backend_utils as pb_utils

from sonic.workflow.jets import AK4, EVENT_FIELDS, cluster_event


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            candidates = {k: pb_utils.get_input_tensor_by_name(request, f"pf_{k}").as_numpy()
                          for k in EVENT_FIELDS}
            lengths = {k: len(v) for k, v in candidates.items()}
            if len(set(lengths.values())) > 1:
                error = pb_utils.TritonError(
                    f"every candidate input needs one value per candidate; lengths {lengths}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            jets = pb_utils.Tensor("jets", cluster_event(candidates, AK4))
            responses.append(pb_utils.InferenceResponse(output_tensors=[jets]))
        return responses
