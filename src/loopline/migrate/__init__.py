"""Move a loopline installation's work elsewhere (a laptop's to a team's servers): ``export`` writes a
bundle folder (data, labels, registered models) with the SHA-256 of every file in ``bundle.json``;
``import`` checks every file, then copies the data into the target data root and registers the models in
the target MLflow, idempotently (a second import creates nothing)."""
