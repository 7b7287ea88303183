"""Deploying registered models: the target interface and records (``base``), the deployment history
(``history``), the smoke test gating every deployment (``smoke``), and the targets (``local``, Docker
images, Kubernetes manifests)."""
