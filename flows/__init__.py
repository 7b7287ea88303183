"""Prefect flows: the entrypoints of loopline (one file per stage, plus pipeline.py)."""
