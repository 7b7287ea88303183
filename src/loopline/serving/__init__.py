"""The model server's core (no HTTP, no Prefect): image decoding and the one preprocessing
(``preprocess``), registry look-up, download and ONNX Runtime loading of a model version (``model``),
and dynamic micro-batching of requests (``batching``). Importing this package imports nothing heavy."""
