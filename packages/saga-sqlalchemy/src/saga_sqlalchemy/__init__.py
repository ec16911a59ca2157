"""saga-sqlalchemy: plugin for saga-core (work in progress)."""
