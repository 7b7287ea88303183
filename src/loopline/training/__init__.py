"""Training: datasets from the labeled manifest, models, the train loop, checkpoints, ONNX export."""
