"""The protocol's parameter keys: one home for the names both directions of the wire use.

Triton's extensions put their options in a tensor's or request's
``parameters`` map: shared memory (``shared_memory_region`` ...), the HTTP
binary-tensor extension (``binary_data_size`` ...) and classification.  The
codecs, the server, the client and the perf tools all read or write them by
these names, so a misspelling is an import error, not a silent miss.
"""

from __future__ import annotations

#: The registered region a tensor lives in (system or CUDA shared memory).
SHM_REGION = "shared_memory_region"
#: Where in the region the tensor starts (default 0).
SHM_OFFSET = "shared_memory_offset"
#: How many bytes of the region the tensor spans (required with a region).
SHM_BYTE_SIZE = "shared_memory_byte_size"
#: The three shared-memory keys, which the server takes off a tensor before the model sees it.
SHM_KEYS = (SHM_REGION, SHM_OFFSET, SHM_BYTE_SIZE)

#: HTTP binary extension: the tensor's bytes follow the JSON header, this many of them.
BINARY_DATA_SIZE = "binary_data_size"
#: HTTP binary extension: an output asked for as binary (per output).
BINARY_DATA = "binary_data"
#: HTTP binary extension: every output binary unless it says otherwise (per request).
BINARY_DATA_OUTPUT = "binary_data_output"

#: Schedule-policy extension: a request's priority level and queue timeout (µs).
PRIORITY = "priority"
TIMEOUT = "timeout"
#: The request parameters that change how the server handles a request; others (such as
#: perf_analyzer's ``triton_enable_empty_final_response``, meaningful for decoupled models
#: only) are accepted and change nothing.
SCHEDULE_PARAMETERS = (PRIORITY, TIMEOUT)

#: Classification extension: the top-k classes instead of the output tensor.
CLASSIFICATION = "classification"


def shm_parameters(region: str, byte_size: int, offset: int = 0) -> dict[str, str | int]:
    """A tensor's parameters placing it in a registered region."""
    params: dict[str, str | int] = {SHM_REGION: region, SHM_BYTE_SIZE: byte_size}
    if offset:
        params[SHM_OFFSET] = offset
    return params
