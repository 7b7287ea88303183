"""The register stage's core: ONNX evaluation, the champion/challenger gate, MLflow registry operations."""
