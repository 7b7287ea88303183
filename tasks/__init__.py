"""Prefect tasks: retries, logging and artifacts around calls into the loopline core."""
