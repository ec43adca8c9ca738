"""The physics workflow: collision events, DeepMET inputs, and a job run direct or as a service.

- :mod:`~sonic.workflow.detector`: a parametric CMS particle-flow response
  (generator particles -> PF candidates with d0/dz), with vertices found from the
  tracks (:mod:`~sonic.workflow.primary_vertex`, fromPV) and CMS's PUPPI
  (:mod:`~sonic.workflow.puppi`);
- :mod:`~sonic.workflow.generate`: Pythia 8 events with pileup, written with
  uproot in a NanoAOD-like schema (``sonic sample``);
- :mod:`~sonic.workflow.inputs`: DeepMET's model inputs built exactly as
  CMSSW's ``DeepMETSonicProducer`` builds them;
- :mod:`~sonic.workflow.deepmet`: the DeepMET network, its training with
  PyTorch and its ONNX export (needs the ``torch`` extra);
- :mod:`~sonic.workflow.runner`: the job (``sonic workflow run``), direct or
  through the SONIC client, on one process or a Dask cluster;
- :mod:`~sonic.workflow.report`: resolution, plots and the HTML report.
"""
