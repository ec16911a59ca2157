"""saga-redis: plugin for saga-core (work in progress)."""
