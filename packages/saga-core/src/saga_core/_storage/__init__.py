"""The storage layer: the protocol plugins implement, its records and rules, the journal codec,
the in-memory storage and plugin loading. Its public face is :mod:`saga_core.storage`."""
