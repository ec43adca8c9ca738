"""From an accepted request to a backend call: queues, batches and instances.

- :mod:`~sonic.server.scheduling.scheduler`: Triton's default scheduler and its dynamic
  batcher (queue policy, priorities, preferred sizes, timeouts).
- :mod:`~sonic.server.scheduling.delay`: when holding a partial batch for company is worth it.
- :mod:`~sonic.server.scheduling.batching`: merging requests into one batch and splitting
  the outputs back (ragged inputs, batch inputs).
- :mod:`~sonic.server.scheduling.instances`: a model's instances, each on its own thread.
"""
