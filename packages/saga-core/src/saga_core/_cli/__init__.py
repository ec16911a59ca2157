"""The ``saga`` command line: a client of the runtime and storage APIs only."""
