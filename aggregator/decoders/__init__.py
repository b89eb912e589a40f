"""The wire decoders: one module per protocol, each turning a request body and its headers into
events, or a ``Rejection`` that becomes a 4xx. Nothing else may leave a decoder."""
