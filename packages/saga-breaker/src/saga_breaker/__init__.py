"""saga-breaker: plugin for saga-core (work in progress)."""
