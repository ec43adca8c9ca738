"""Wire-level types and codecs of the Triton (KServe v2) inference protocol.

- :mod:`~sonic.protocol.datatypes`: datatype names and numpy dtypes.
- :mod:`~sonic.protocol.tensors`: transport-free requests, responses, raw bytes.
- :mod:`~sonic.protocol.grpc_codec`: ``ModelInferRequest``/``Response`` messages.
- :mod:`~sonic.protocol.http_codec`: JSON and the binary tensor extension.

Nothing here knows about models or servers; the client and the server share it.
"""
