"""The context codec: a strict, lossless JSON encoding of a saga's context, planned once per
context type, and ``SagaContext``, the optional base class that exposes it."""
