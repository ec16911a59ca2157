"""saga-core (being built)."""
