"""A/B tests and progressive rollout: the router in front of champion and challenger, the event store,
the always-valid statistics and the ramp policy (no Prefect here; ``flows/rollout.py`` orchestrates)."""
