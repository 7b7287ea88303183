"""Drift and health of what is served, read from the A/B stage's event store (see ``monitor.py``)."""
