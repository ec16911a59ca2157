"""The model layer: what a user defines, with no I/O — steps, sagas, nodes (``Fallback``),
retry policies, outcomes, statuses and the error tree. Every other layer imports it."""
