"""Data: sources, image checks, de-duplication, content-addressed storage, manifests, splits."""
