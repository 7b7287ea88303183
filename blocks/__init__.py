"""Prefect blocks: shared endpoints and secrets of the services loopline talks to."""
