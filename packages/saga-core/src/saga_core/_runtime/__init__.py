"""The runtime: the mediator applications call, the recovery worker, and lease keeping."""
